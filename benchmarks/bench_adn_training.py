"""Does every sub-network of an ADN work? The issue-7 check, at small scale.

The paper trains only the super-net and the base-net and claims that every mixed
sub-network works too. This benchmark trains one architecture with one budget in
three ways and evaluates all 2^S sub-networks five ways:

  (a) ADN            official self-distillation (logit KD), sub-networks as trained
  (b) ADN + FKD      (a) plus feature distillation of stage outputs (official --fpn)
  (c) plain          ordinary training of the super-net, then skipping stages
                     (twins = copies of the main norms: nothing was trained for skipping)
  (d) plain + recal  (c) with per-sub-network BatchNorm recalibration
  (e) ADN + recal    (a) with per-sub-network BatchNorm recalibration
  extra: (b) + recal, free once (b) is trained

on the full training split and on a class-balanced 30 % of it, for 2 seeds. Every
accuracy is top-1 on the fixed test split of a built-in dataset, measured on the
materialised (BN-folded) sub-network, i.e. what export ships. GMACs come from
``adn_edge.flops.arch_costs`` at the benchmark's input size.

Default: resnet_tiny on the built-in digits at 16x16 (the 8x8 digits lose nothing at
16, and it keeps the whole run near 15-25 minutes on 2 CPU cores), 30 epochs, SGD
lr 0.1 cosine with 1 warm-up epoch, batch 64, 512 recalibration images.

    python benchmarks/bench_adn_training.py            # the full check (~15-25 min on 2 cores)
    python benchmarks/bench_adn_training.py --quick    # a smoke run (~1-2 min)

Writes ``benchmarks/results/adn_training_<dataset>[_quick].json`` and prints the tables.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from adn_edge import subnet  # noqa: E402
from adn_edge.flops import arch_costs  # noqa: E402
from adn_edge.train import data as data_mod  # noqa: E402
from adn_edge.train.evaluate import evaluate_model  # noqa: E402
from adn_edge.train.recalibrate import calibration_batches  # noqa: E402
from adn_edge.train.trainer import TrainConfig, train  # noqa: E402

VARIANTS = {
    "a": "ADN",
    "b": "ADN + feature KD",
    "c": "plain, then skip",
    "d": "plain + recal",
    "e": "ADN + recal",
    "b+r": "ADN + feature KD + recal",
}
# variant -> (training run, recalibrate?)
RECIPES = {"a": ("adn", False), "b": ("fkd", False), "c": ("plain", False), "d": ("plain", True),
           "e": ("adn", True), "b+r": ("fkd", True)}
RUNS = {"adn": dict(mode="adn", feature_kd=False), "fkd": dict(mode="adn", feature_kd=True),
        "plain": dict(mode="plain", feature_kd=False)}
FLOOR_POINTS = 1.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="4 epochs, 1 seed: a smoke run of the whole pipeline")
    p.add_argument("--arch", default="resnet_tiny")
    p.add_argument("--dataset", default="digits", choices=data_mod.BUILTIN_NAMES)
    p.add_argument("--input-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=None, help="default 30 (quick: 4)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 (quick: 0)")
    p.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.3])
    p.add_argument("--equal-steps", action="store_true",
                   help="train reduced splits for epochs/fraction epochs (same optimizer steps as the full split); "
                        "default: the same epochs")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--recal-samples", type=int, default=512)
    p.add_argument("--threads", type=int, default=1,
                   help="PyTorch threads (1 is fastest on a shared 2-core machine: oversubscribed OpenMP crawls)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--work-dir", type=Path, default=None, help="checkpoints (default: a temporary directory)")
    return p.parse_args(argv)


def train_one(args: argparse.Namespace, run: str, seed: int, fraction: float, work: Path) -> tuple[Any, dict]:
    epochs = args.epochs
    if args.equal_steps and fraction < 1.0:
        epochs = max(1, round(args.epochs / fraction))
    cfg = TrainConfig(arch=args.arch, data=f"builtin:{args.dataset}", out_dir=str(work / f"{run}_f{fraction}_s{seed}"),
                      epochs=epochs, batch_size=args.batch_size, lr=args.lr, warmup_epochs=args.warmup_epochs,
                      seed=seed, train_fraction=fraction, input_size=args.input_size, final_eval=False,
                      log_every=10_000, **RUNS[run])
    t0 = time.perf_counter()
    res = train(cfg)
    info = {"run": run, "seed": seed, "fraction": fraction, "epochs": epochs,
            "train_seconds": round(time.perf_counter() - t0, 1),
            "history": [{k: v for k, v in h.items() if k in ("epoch", "train_loss", "super_top1", "base_top1")}
                        for h in res.history]}
    return res.model.eval(), info


def summarise(acc: dict[str, float], super_code: str) -> dict[str, float]:
    sup = acc[super_code]
    return {"super": sup, "base": acc["0" * len(super_code)], "min": min(acc.values()),
            "mean": statistics.fmean(acc.values()), "max_gap": max(sup - v for v in acc.values())}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.epochs is None:
        args.epochs = 4 if args.quick else 30
    if args.seeds is None:
        args.seeds = [0] if args.quick else [0, 1]
    torch.set_num_threads(args.threads)
    import tempfile

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="adn_bench_"))
    prep = data_mod.preprocess_for_arch(args.arch, args.input_size)
    test = data_mod.load_builtin(args.dataset, "test", prep)
    S = 4
    costs = arch_costs(args.arch, test.num_classes, args.input_size)
    codes = subnet.ordered_all(S, cost=lambda c: costs[c].macs)
    sup = subnet.super_code(S)
    t_start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    # results[fraction][variant][seed] = {code: top1}
    results: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for fraction in args.fractions:
        fkey = f"{fraction:g}"
        results[fkey] = {v: {} for v in VARIANTS}
        for seed in args.seeds:
            train_set = data_mod.load_builtin(args.dataset, "train", prep, fraction, seed)
            batches = calibration_batches(train_set, args.recal_samples, 64, seed)
            for run in RUNS:
                model, info = train_one(args, run, seed, fraction, work)
                t0 = time.perf_counter()
                for variant, (vrun, recal) in RECIPES.items():
                    if vrun != run:
                        continue
                    res = evaluate_model(model, test, codes, recalibrate_with=batches if recal else None)
                    results[fkey][variant][str(seed)] = {c: round(s.top1, 3) for c, s in res.subnets.items()}
                info["eval_seconds"] = round(time.perf_counter() - t0, 1)
                runs.append(info)
                print(f"[{time.perf_counter() - t_start:6.0f}s] fraction {fkey} seed {seed} {run:5s}: "
                      f"train {info['train_seconds']:.0f}s, super {results[fkey][RECIPES_FIRST[run]][str(seed)][sup]:.2f}%",
                      flush=True)
    summary = build_summary(results, codes, sup)
    record = {
        "schema": 1, "benchmark": "adn_training", "issue": 7,
        "command": "python benchmarks/bench_adn_training.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "work_dir"},
        "dataset": {"name": args.dataset, "train": len(data_mod.load_builtin(args.dataset, "train", prep)),
                    "test": len(test), "input_size": args.input_size},
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "threads": args.threads},
        "seconds": round(time.perf_counter() - t_start, 1),
        "variants": VARIANTS,
        "gmacs": {c: round(costs[c].gmacs, 6) for c in codes},
        "floor": {"variant": "e", "max_gap_points": FLOOR_POINTS},
        "results": results, "summary": summary, "runs": runs,
    }
    out = args.out or REPO / "benchmarks" / "results" / f"adn_training_{args.dataset}{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    from adn_edge.fileio import write_json

    write_json(out, record)
    print_tables(record, codes)
    print(f"\nwrote {out} ({record['seconds']:.0f} s)")
    return record


RECIPES_FIRST = {"adn": "a", "fkd": "b", "plain": "c"}


def build_summary(results: dict, codes: list[str], sup: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fkey, by_variant in results.items():
        out[fkey] = {}
        for variant, by_seed in by_variant.items():
            if not by_seed:
                continue
            per_seed = {s: summarise(acc, sup) for s, acc in by_seed.items()}
            mean_acc = {c: statistics.fmean(acc[c] for acc in by_seed.values()) for c in codes}
            out[fkey][variant] = {
                "per_subnet_mean": {c: round(v, 3) for c, v in mean_acc.items()},
                "per_seed": {s: {k: round(v, 3) for k, v in d.items()} for s, d in per_seed.items()},
                "mean": {k: round(statistics.fmean(d[k] for d in per_seed.values()), 3)
                         for k in ("super", "base", "min", "mean", "max_gap")},
                "worst_seed_max_gap": round(max(d["max_gap"] for d in per_seed.values()), 3),
                "floor_ok": all(d["max_gap"] <= FLOOR_POINTS for d in per_seed.values()),
            }
    return out


def print_tables(record: dict[str, Any], codes: list[str]) -> None:
    summary, gmacs = record["summary"], record["gmacs"]
    variants = [v for v in VARIANTS if any(v in s for s in summary.values())]
    for fkey, by_variant in summary.items():
        n_seeds = len(next(iter(by_variant.values()))["per_seed"])
        print(f"\n### {record['dataset']['name']}, training fraction {fkey}: top-1 % on the test split "
              f"({record['dataset']['test']} images), mean of {n_seeds} seed(s), input "
              f"{record['dataset']['input_size']}x{record['dataset']['input_size']}\n")
        head = ["code", "GMACs"] + [f"({v}) {VARIANTS[v]}" for v in variants]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for c in codes:
            row = [c, f"{gmacs[c]:.4f}"] + [f"{by_variant[v]['per_subnet_mean'][c]:.2f}" for v in variants]
            print("| " + " | ".join(row) + " |")
        for label, key in (("mean of 16", "mean"), ("worst sub-network", "min")):
            row = [f"**{label}**", ""] + [f"{by_variant[v]['mean'][key]:.2f}" for v in variants]
            print("| " + " | ".join(row) + " |")
        row = ["**max gap to super (worst seed)**", ""] + [f"{by_variant[v]['worst_seed_max_gap']:.2f}"
                                                          for v in variants]
        print("| " + " | ".join(row) + " |")
        e = by_variant.get("e")
        if e is not None:
            print(f"\nfloor (e): every sub-network within {FLOOR_POINTS} points of its super-net in every seed: "
                  f"{'PASS' if e['floor_ok'] else 'FAIL'} (worst gap {e['worst_seed_max_gap']:.2f})")


if __name__ == "__main__":
    main()
