"""The runtime runs on a robot without torch (docs/runtime.md).

A subprocess installs an import hook that makes ``import torch`` fail (as on a
robot without it) and records who tried to import it (looking a package up with
``importlib.util.find_spec``, as backend discovery does, is not importing), then imports ``adn_edge.runtime``, opens
the directory exported beforehand with ``backend="auto"`` (monolithic and
segmented), switches and infers, and compares with references computed here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np

from tests._util import REPO
from tests.runtime._helpers import TOL

SCRIPT = textwrap.dedent("""
    import json, sys, traceback
    attempts = []

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                stack = traceback.extract_stack()[:-1]
                attempts.append({"name": name, "from_adn_edge": any("adn_edge" in f.filename for f in stack),
                                 # importlib.util.find_spec asks finders without importing
                                 "import": any(f.name == "_find_and_load" for f in stack)})
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, NoTorch())

    import numpy as np
    import adn_edge.runtime as rt
    from adn_edge.runtime import EngineSwitcher, DeadlineGovernor

    model_dir, inputs_path = sys.argv[1], sys.argv[2]
    x = np.load(inputs_path)
    out = {"backends": rt.available_backends(), "problems": rt.backend_problems(), "logits": {}}
    for segmented in (False, True):
        with EngineSwitcher.open(model_dir, backend="auto", subnets="all", segmented=segmented, threads=1) as sw:
            out.setdefault("used", []).append(sw.backend_name)
            for code in ("1111", "0110", "0000"):
                sw.switch(code)
                out["logits"][f"{segmented}:{code}"] = sw.infer(x).tolist()
            gov = DeadlineGovernor(list(reversed(sw.codes)), 1000.0, switcher=sw)
            gov.infer(x)
    out["attempts"] = attempts
    out["torch_loaded"] = sys.modules.get("torch") is not None
    print(json.dumps(out))
""")


def test_runtime_runs_without_torch(model_dir, inputs, references, tmp_path):
    x = inputs[2]
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(model_dir), str(tmp_path / "x.npy")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not out["torch_loaded"]
    assert not [a for a in out["attempts"] if a["from_adn_edge"] and a["import"]], out["attempts"]
    assert "torch" not in out["backends"] and "onnxruntime" in out["backends"]
    assert "torch" in out["problems"]
    assert out["used"] == ["onnxruntime", "onnxruntime-segmented"]
    for key, logits in out["logits"].items():
        code = key.split(":")[1]
        err = np.linalg.norm(np.asarray(logits) - references[code][2]) / np.linalg.norm(references[code][2])
        assert err <= TOL, key
