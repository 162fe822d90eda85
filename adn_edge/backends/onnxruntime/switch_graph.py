"""One ONNX Runtime session for every sub-network of a segmented model (the CPU default).

A chain of 2*S segment sessions pays, at more than one thread, for S thread pools
handing the cores to each other: each session's pool wakes for its segment and goes
back to sleep (spinning pools fight instead: 3-4x slower), which cost ResNet50-ADN
1.16x the latency of one monolithic graph at 2 threads. ONNX Runtime's process-wide
global pool removes that (1.07x), but once created every other session in the
process, the application's own included, must use it ("use_per_session_threads must
be false when using a global thread pool"), so an embedded runtime cannot impose it.

Here the S segment pairs become ONE graph instead: stage k is an ``If`` on a boolean
input ``skip<k>`` whose branches are the skipped and the full form of part k. One
session, one thread pool, one ``run`` per inference, and switching is a different
set of booleans. Two ONNX Runtime details decide how it is built:

* initializers inside an ``If`` branch are held twice by ONNX Runtime (as graph
  protos and as tensors: 374 MB instead of ~190 for ResNet50-ADN, at every
  optimisation level), while initializers of the main graph that branches read from
  the outer scope are held once;
* the optimiser transforms only initializers of a branch's own scope, so with the
  weights hoisted to the main graph, convolutions would lose the NCHWc layout
  (1.2x slower).

So each segment form is first optimised by ONNX Runtime itself, on this machine, at
``all`` (the NCHWc layout and block size are this CPU's), written to a private
temporary file, and only then composed, weights hoisted to the main graph; the
composed graph is loaded with the optimiser off, since it is optimised already.
Numerically it is the segment chain (the same kernels on the same weights).
Measured by ``benchmarks/bench_cpu_modes.py`` and ``benchmarks/bench_cpu_ceiling.py``.

Module-level imports: numpy and the standard library; ``onnx`` is imported when a
graph is composed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adn_edge.errors import AdnError


def flag_name(k: int) -> str:
    """The boolean input that selects part ``k``'s skipped form."""
    return f"skip{k}"


class SwitchGraphBuilder:
    """Collects the forms of every part as ONNX Runtime optimised them, then composes
    them (see the module docstring). The caller opens a session per form that writes
    its optimised graph to :meth:`path_for` (and checks what it checks on it), then
    hands the file over with :meth:`add_form`."""

    def __init__(self) -> None:
        import onnx

        self.onnx = onnx
        self._tmp = tempfile.TemporaryDirectory(prefix="adn-edge-switch-graph-")
        self._parts: dict[int, dict[str, Any]] = {}

    def path_for(self, index: int, kind: str) -> str:
        return str(Path(self._tmp.name) / f"part{index}_{kind}.onnx")

    def add_form(self, index: int, kind: str, in_name: str, out_name: str) -> None:
        """Take over the optimised graph of part ``index``, form ``kind`` (``full``/``skip``)."""
        path = Path(self.path_for(index, kind))
        self.add_model(index, kind, in_name, out_name, self.onnx.load(str(path)))
        path.unlink()

    def add_model(self, index: int, kind: str, in_name: str, out_name: str, model: Any) -> None:
        """A form given as an ``onnx.ModelProto`` (``benchmarks/bench_cpu_ceiling.py`` composes
        the unoptimised segment graphs this way, to measure the naive variant)."""
        part = self._parts.setdefault(index, {"index": index, "input": in_name, "output": out_name, "forms": {}})
        part["forms"][kind] = model

    def compose(self, hoist: bool = True) -> bytes:
        """The serialized one-session graph: inputs (activation, ``skip0..skip{S-1}``), one
        output. ``hoist=False`` leaves each branch's initializers in the branch (the naive
        form, held twice by ONNX Runtime: measured, not used)."""
        onnx = self.onnx
        helper = onnx.helper
        hoisted: list[Any] = []
        opsets: dict[str, int] = {}
        nodes: list[Any] = []
        inputs: list[Any] = []
        side_inputs: dict[str, Any] = {}
        ir_version = 0
        parts = [self._parts[k] for k in sorted(self._parts)]
        last = parts[-1]
        output = onnx.ValueInfoProto()  # copied before the branches rename their values
        output.CopyFrom(next(o for o in last["forms"]["full"].graph.output if o.name == last["output"]))
        for part in parts:
            k = part["index"]
            branches = {}
            for kind, model in part["forms"].items():
                ir_version = max(ir_version, model.ir_version)
                for o in model.opset_import:
                    opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
                if not inputs:
                    inputs.append(next(i for i in model.graph.input if i.name == part["input"]))
                for extra in model.graph.input:  # correction inputs: read by the branch from the outer scope
                    if extra.name != part["input"] and extra.name not in side_inputs:
                        side_inputs[extra.name] = extra
                branches[kind] = self._branch(model.graph, f"p{k}{kind}/", part["input"], hoisted if hoist else None)
            inputs.append(helper.make_tensor_value_info(flag_name(k), onnx.TensorProto.BOOL, []))
            nodes.append(helper.make_node("If", [flag_name(k)], [part["output"]], name=f"part{k}",
                                          then_branch=branches["skip"], else_branch=branches["full"]))
        graph = helper.make_graph(nodes, "adn_switch_graph", inputs + list(side_inputs.values()), [output],
                                  initializer=hoisted)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
        model.ir_version = ir_version
        self._parts.clear()
        data: bytes = model.SerializeToString()
        return data

    @staticmethod
    def _branch(graph: Any, prefix: str, activation: str, hoisted: list[Any] | None) -> Any:
        """``graph`` as an input-less ``If`` branch: its inputs (the activation
        ``activation``, and the corrections of corrected segments, which keep their names:
        both forms of a part read the same ones) read from the outer scope, every other
        name prefixed (branches share one namespace), initializers moved to ``hoisted``
        (the main graph's)."""
        outer = {i.name for i in graph.input}
        if activation not in outer:
            raise AdnError(f"A segment graph has inputs {sorted(outer)} after optimisation, not {activation!r}.",
                           "Open with single_session=False, and re-export the segments.")

        def rename(name: str) -> str:
            return name if (name in outer or not name) else prefix + name

        for t in graph.initializer:
            t.name = prefix + t.name
        for node in graph.node:
            node.name = prefix + node.name
            node.input[:] = [rename(n) for n in node.input]
            node.output[:] = [rename(n) for n in node.output]
        for info in list(graph.value_info) + list(graph.output):
            info.name = rename(info.name)
        if hoisted is not None:
            hoisted.extend(graph.initializer)
            del graph.initializer[:]
        del graph.input[:]
        graph.name = prefix.rstrip("/")
        return graph

    def close(self) -> None:
        self._parts.clear()
        self._tmp.cleanup()


def flag_feeds(codes: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """Per code, the boolean inputs that select its forms (made once, fed every run)."""
    return {c: {flag_name(k): np.array(ch == "0") for k, ch in enumerate(c)} for c in codes}


def correction_code_feeds(codes: Sequence[str], corr: list[dict[str, dict[str, np.ndarray]]],
                          shapes: dict[str, list[Any]]) -> dict[str, dict[str, np.ndarray]]:
    """Per code, a value for every correction input of the one-session graph:
    ``corr[k][prefix]`` (:func:`adn_edge.modeldir.manifest.correction_feeds`) for the
    form part k runs, and zeros for inputs only the other form reads (ONNX Runtime
    wants every graph input fed; the branch that would read them does not run). The
    arrays are shared between codes, not copied."""
    zeros: dict[str, np.ndarray] = {}
    out: dict[str, dict[str, np.ndarray]] = {}
    for code in codes:
        feed: dict[str, np.ndarray] = {}
        for k in range(len(code)):
            feed.update(corr[k][code[:k + 1]])
        for name, shape in shapes.items():
            if name not in feed:
                if name not in zeros:
                    zeros[name] = np.zeros([int(d) for d in shape], dtype=np.float32)
                feed[name] = zeros[name]
        out[code] = feed
    return out
