"""Rebuild the embedded model's files from an ``adn-edge train`` run directory.

    adn-edge train --arch resnet_tiny --data builtin --epochs 30 --lr 0.1 --warmup-epochs 1 \\
        --seed 0 --threads 1 --out runs/resnet_tiny_digits
    python -m adn_edge.data.make_embedded runs/resnet_tiny_digits "<the train command>"

Copies ``model.safetensors`` to ``adn_edge/data/resnet_tiny_digits.safetensors`` and writes
``resnet_tiny_digits.json``: the command, the training time, and top-1/top-5 of every
sub-network on the built-in test split, as trained and after per-sub-network BN
recalibration on 512 training images (what ``adn-edge export --recalibrate`` ships).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from adn_edge.data import DATA_DIR, EMBEDDED_ARCH, EMBEDDED_NAME

RECAL_SAMPLES = 512


def build(run_dir: Path, command: str) -> dict[str, Any]:
    import torch

    from adn_edge import checkpoint
    from adn_edge.fileio import sha256_file, write_json
    from adn_edge.flops import arch_costs
    from adn_edge.train import data as data_mod
    from adn_edge.train.evaluate import evaluate_model
    from adn_edge.train.recalibrate import calibration_batches

    torch.set_num_threads(1)
    src = run_dir / "model.safetensors"
    model, ck = checkpoint.load(src, arch=EMBEDDED_ARCH)
    prep = data_mod.preprocess_for_checkpoint(EMBEDDED_ARCH, ck.header)
    test = data_mod.load_builtin("digits", "test", prep)
    train = data_mod.load_builtin("digits", "train", prep)
    raw = evaluate_model(model, test, "all")
    recal = evaluate_model(model, test, "all", recalibrate_with=calibration_batches(train, RECAL_SAMPLES, 64, 0))
    costs = arch_costs(EMBEDDED_ARCH, model.num_classes, prep.input_size)
    log = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in log if r.get("event") == "epoch"]
    dest = DATA_DIR / f"{EMBEDDED_NAME}.safetensors"
    shutil.copyfile(src, dest)
    record = {
        "arch": EMBEDDED_ARCH, "file": dest.name, "sha256": sha256_file(dest), "bytes": dest.stat().st_size,
        "dataset": {"name": "digits", "source": "sklearn.datasets.load_digits", "train": len(train),
                    "test": len(test), "input_size": prep.input_size, "mean": list(prep.mean), "std": list(prep.std)},
        "command": command,
        "train_seconds": round(sum(r.get("seconds", 0.0) for r in epochs), 1),
        "epochs": len(epochs),
        "recalibration": {"samples": RECAL_SAMPLES, "batch": 64, "seed": 0, "split": "train"},
        "eval_command": f"adn-edge eval adn_edge/data/{dest.name} --data builtin",
        "subnets": {c: {"gmacs": round(costs[c].gmacs, 6), "top1": raw.subnets[c].record()["top1"],
                        "top5": raw.subnets[c].record()["top5"],
                        "top1_recalibrated": recal.subnets[c].record()["top1"],
                        "top5_recalibrated": recal.subnets[c].record()["top5"]} for c in raw.subnets},
    }
    write_json(DATA_DIR / f"{EMBEDDED_NAME}.json", record)
    return record


if __name__ == "__main__":
    rec = build(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "")
    for c, s in rec["subnets"].items():
        print(c, s["gmacs"], s["top1"], s["top1_recalibrated"])
