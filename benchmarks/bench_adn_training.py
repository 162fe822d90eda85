"""Is every sub-network of an ADN good, on every seed? The multi-seed training study.

The paper trains only the super-net and the base-net and claims that every mixed
sub-network works too. This benchmark trains one architecture with one budget in
several ways, on several seeds and two training splits (all of the built-in data and
a class-balanced 30 % of it), and evaluates all 2^S sub-networks of each model:

  (a)   ADN                  official self-distillation (logit KD), as trained
  (c)   plain                ordinary training of the super-net, then skipping stages
                             (twins = copies of the main norms: nothing trained for skipping)
  (d)   plain + recal        (c) with per-sub-network BatchNorm recalibration
  (e)   ADN + recal          (a) with per-sub-network BatchNorm recalibration
  (a+j) ADN + joint recal    (a) with ONE set of statistics re-estimated over all
                             sub-networks (what one graph per stage and form can carry)
  (g)   ADN + sandwich       ``train --sandwich K``: K sampled mixed sub-networks per
                             step, distilled from the super-net (beyond the paper)
  (g+r) (g) + per-sub-network recalibration
  (g+j) (g) + joint recalibration: do the stages become interchangeable?
  optional (``--runs ... fkd``): (b) ADN + feature KD (official --fpn), (b+r)

Every accuracy is top-1 on the fixed test split of a built-in dataset, measured on the
materialised (BN-folded) sub-network, i.e. what export ships. Per variant and split
it reports super, base, mean of the 2^S, worst, the worst gap to the super-net, and
the spread over seeds (mean and standard deviation of the worst gap), plus the gap of
the seed-averaged accuracies; the per-sub-network, per-seed table is in the JSON.

Default: resnet_tiny on the built-in digits at 16x16, 30 epochs, SGD lr 0.1 cosine
with 1 warm-up epoch, batch 64, 512 recalibration images, seeds 0-4, sandwich K=1;
trainings run in ``--jobs`` processes of one PyTorch thread each (2 on a 2-core box:
about 20-30 minutes).

    python benchmarks/bench_adn_training.py            # the study
    python benchmarks/bench_adn_training.py --quick    # a smoke run (~1-2 min)
    python benchmarks/bench_adn_training.py --timing   # seconds per epoch of each run, paired

``--timing`` trains each run for 2 epochs on the full split, the runs interleaved and
repeated, in one process of one thread, so that the load of a shared machine hits all
alike (the study's own per-epoch figures come from parallel jobs under varying load).

Writes ``benchmarks/results/adn_training_<dataset>[_quick].json`` and prints the tables.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
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
from adn_edge.train.recalibrate import calibration_batches, recalibrated_jointly  # noqa: E402
from adn_edge.train.trainer import TrainConfig, train  # noqa: E402

VARIANTS = {
    "a": "ADN (paper)",
    "c": "plain, then skip",
    "d": "plain + recal",
    "e": "ADN + recal",
    "a+j": "ADN + joint recal",
    "g": "ADN + sandwich",
    "g+r": "ADN + sandwich + recal",
    "g+j": "ADN + sandwich + joint recal",
    "b": "ADN + feature KD",
    "b+r": "ADN + feature KD + recal",
}
# variant -> (training run, statistics: None | "per-subnet" | "joint")
RECIPES = {"a": ("adn", None), "c": ("plain", None), "d": ("plain", "per-subnet"), "e": ("adn", "per-subnet"),
           "a+j": ("adn", "joint"), "g": ("sandwich", None), "g+r": ("sandwich", "per-subnet"),
           "g+j": ("sandwich", "joint"), "b": ("fkd", None), "b+r": ("fkd", "per-subnet")}
RUNS = {"adn": dict(mode="adn", feature_kd=False), "plain": dict(mode="plain", feature_kd=False),
        "sandwich": dict(mode="adn", feature_kd=False), "fkd": dict(mode="adn", feature_kd=True)}
DEFAULT_RUNS = ["adn", "plain", "sandwich"]
FLOOR_POINTS = 1.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="4 epochs, 1 seed: a smoke run of the whole pipeline")
    p.add_argument("--timing", action="store_true", help="only measure seconds per epoch of each run (paired)")
    p.add_argument("--arch", default="resnet_tiny")
    p.add_argument("--dataset", default="digits", choices=data_mod.BUILTIN_NAMES)
    p.add_argument("--input-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=None, help="default 30 (quick: 4)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 3 4 (quick: 0)")
    p.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.3])
    p.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, choices=list(RUNS),
                   help="trainings per seed and split (default: adn plain sandwich)")
    p.add_argument("--sandwich", type=int, default=1, help="mixed sub-networks per step of the sandwich run")
    p.add_argument("--equal-steps", action="store_true",
                   help="train reduced splits for epochs/fraction epochs (same optimizer steps as the full split); "
                        "default: the same epochs")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--recal-samples", type=int, default=512)
    p.add_argument("--threads", type=int, default=1,
                   help="PyTorch threads per job (1: oversubscribed OpenMP crawls on a shared machine)")
    p.add_argument("--jobs", type=int, default=2, help="trainings run at once, one process each")
    p.add_argument("--device", default="cpu", help="training device (cpu, cuda)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--work-dir", type=Path, default=None, help="checkpoints (default: a temporary directory)")
    return p.parse_args(argv)


def run_config(args: argparse.Namespace, run: str, seed: int, fraction: float, epochs: int, out_dir: Path,
               warmup_epochs: float) -> TrainConfig:
    """The TrainConfig of one training of the study (``run``: a key of RUNS)."""
    extra = {"sandwich": args.sandwich} if run == "sandwich" else {}
    return TrainConfig(arch=args.arch, data=f"builtin:{args.dataset}", out_dir=str(out_dir), epochs=epochs,
                       batch_size=args.batch_size, lr=args.lr, warmup_epochs=warmup_epochs, seed=seed,
                       train_fraction=fraction, input_size=args.input_size, final_eval=False, log_every=10_000,
                       device=args.device, **RUNS[run], **extra)


def run_task(args: argparse.Namespace, run: str, seed: int, fraction: float, work: Path) -> dict[str, Any]:
    """One training (run, seed, split) and the evaluation of every variant it feeds."""
    torch.set_num_threads(args.threads)
    prep = data_mod.preprocess_for_arch(args.arch, args.input_size)
    test = data_mod.load_builtin(args.dataset, "test", prep)
    train_set = data_mod.load_builtin(args.dataset, "train", prep, fraction, seed)
    batches = calibration_batches(train_set, args.recal_samples, 64, seed)
    epochs = args.epochs
    if args.equal_steps and fraction < 1.0:
        epochs = max(1, round(args.epochs / fraction))
    cfg = run_config(args, run, seed, fraction, epochs, work / f"{run}_f{fraction}_s{seed}", args.warmup_epochs)
    t0 = time.perf_counter()
    res = train(cfg)
    model = res.model.eval()
    info = {"run": run, "seed": seed, "fraction": fraction, "epochs": epochs,
            "train_seconds": round(time.perf_counter() - t0, 1),
            "seconds_per_epoch": round((time.perf_counter() - t0) / epochs, 2),
            "history": [{k: v for k, v in h.items() if k in ("epoch", "train_loss", "super_top1", "base_top1")}
                        for h in res.history]}
    S = model.num_skippable_stages
    codes = subnet.all_codes(S)
    t0 = time.perf_counter()
    accuracies: dict[str, dict[str, float]] = {}
    for variant, (vrun, stats) in RECIPES.items():
        if vrun != run:
            continue
        if stats == "joint":
            res_v = evaluate_model(recalibrated_jointly(model, codes, batches), test, codes)
        else:
            res_v = evaluate_model(model, test, codes, recalibrate_with=batches if stats else None)
        accuracies[variant] = {c: round(s.top1, 3) for c, s in res_v.subnets.items()}
    info["eval_seconds"] = round(time.perf_counter() - t0, 1)
    return {"run": run, "seed": seed, "fraction": fraction, "accuracies": accuracies, "info": info}


def summarise(acc: dict[str, float], super_code: str) -> dict[str, float]:
    sup = acc[super_code]
    return {"super": sup, "base": acc["0" * len(super_code)], "min": min(acc.values()),
            "mean": statistics.fmean(acc.values()), "max_gap": max(sup - v for v in acc.values())}


def timing(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    """Seconds per epoch of each run, interleaved (see the module docstring)."""
    import tempfile

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="adn_timing_"))
    per_epoch: dict[str, list[float]] = {run: [] for run in args.runs}
    for rep in range(3):
        for run in args.runs:
            cfg = run_config(args, run, rep, 1.0, 2, work / f"{run}{rep}", warmup_epochs=0.0)
            t0 = time.perf_counter()
            train(cfg)
            per_epoch[run].append((time.perf_counter() - t0) / 2)
    record = {"schema": 1, "benchmark": "adn_training_timing", "issue": 16,
              "command": "python benchmarks/bench_adn_training.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "dataset": args.dataset, "input_size": args.input_size, "batch_size": args.batch_size,
              "threads": args.threads, "machine": {"platform": platform.platform(), "torch": torch.__version__,
                                                   "loadavg_end": list(__import__("os").getloadavg())},
              "seconds_per_epoch_median": {r: round(statistics.median(v), 3) for r, v in per_epoch.items()},
              "seconds_per_epoch": {r: [round(x, 3) for x in v] for r, v in per_epoch.items()}}
    base = record["seconds_per_epoch_median"].get("adn")
    if base:
        record["relative_to_adn"] = {r: round(v / base, 3) for r, v in record["seconds_per_epoch_median"].items()}
    from adn_edge.fileio import write_json

    out = args.out or REPO / "benchmarks" / "results" / f"adn_training_timing_{args.dataset}.json"
    write_json(out, record)
    print("| run | seconds per epoch (median of 3) | relative to ADN |\n|---|---|---|")
    for r, v in record["seconds_per_epoch_median"].items():
        print(f"| {r} | {v:.2f} | {record.get('relative_to_adn', {}).get(r, float('nan')):.2f} |")
    print(f"\nwrote {out}")
    return record


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.timing:
        return timing(args, argv)
    if args.epochs is None:
        args.epochs = 4 if args.quick else 30
    if args.seeds is None:
        args.seeds = [0] if args.quick else [0, 1, 2, 3, 4]
    import tempfile

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="adn_bench_"))
    prep = data_mod.preprocess_for_arch(args.arch, args.input_size)
    test = data_mod.load_builtin(args.dataset, "test", prep)
    S = 4
    costs = arch_costs(args.arch, test.num_classes, args.input_size)
    codes = subnet.ordered_all(S, cost=lambda c: costs[c].macs)
    sup = subnet.super_code(S)
    variants = [v for v, (run, _) in RECIPES.items() if run in args.runs]
    t_start = time.perf_counter()
    # Longest first (full split, sandwich) so the two workers finish together.
    weight = {"sandwich": 3, "fkd": 2, "adn": 2, "plain": 1}
    tasks = sorted(((run, seed, fraction) for fraction in args.fractions for seed in args.seeds for run in args.runs),
                   key=lambda t: -t[2] * weight[t[0]])
    results: dict[str, dict[str, dict[str, dict[str, float]]]] = {
        f"{f:g}": {v: {} for v in variants} for f in args.fractions}
    runs: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_task, args, run, seed, fraction, work) for run, seed, fraction in tasks]
        for fut in futures:
            done = fut.result()
            fkey = f"{done['fraction']:g}"
            for variant, acc in done["accuracies"].items():
                results[fkey][variant][str(done["seed"])] = acc
            runs.append(done["info"])
            first = next(iter(done["accuracies"].values()))
            print(f"[{time.perf_counter() - t_start:6.0f}s] fraction {fkey} seed {done['seed']} {done['run']:8s}: "
                  f"train {done['info']['train_seconds']:.0f}s, super {first[sup]:.2f}%", flush=True)
    summary = build_summary(results, codes, sup)
    per_epoch = {run: {f"{f:g}": round(statistics.fmean(r["seconds_per_epoch"] for r in runs
                                                          if r["run"] == run and r["fraction"] == f), 2)
                       for f in args.fractions} for run in args.runs}
    record = {
        "schema": 2, "benchmark": "adn_training", "issue": 16,
        "command": "python benchmarks/bench_adn_training.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "work_dir"},
        "dataset": {"name": args.dataset, "train": len(data_mod.load_builtin(args.dataset, "train", prep)),
                    "test": len(test), "input_size": args.input_size},
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "threads_per_job": args.threads, "jobs": args.jobs},
        "seconds": round(time.perf_counter() - t_start, 1),
        "variants": {v: VARIANTS[v] for v in variants},
        "gmacs": {c: round(costs[c].gmacs, 6) for c in codes},
        "floor_points": FLOOR_POINTS,
        "train_seconds_per_epoch": per_epoch,
        "recommendation": recommend(summary),
        "results": results, "summary": summary, "runs": runs,
    }
    out = args.out or REPO / "benchmarks" / "results" / f"adn_training_{args.dataset}{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    from adn_edge.fileio import write_json

    write_json(out, record)
    print_tables(record, codes)
    print(f"\nwrote {out} ({record['seconds']:.0f} s)")
    return record


def build_summary(results: dict, codes: list[str], sup: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fkey, by_variant in results.items():
        out[fkey] = {}
        for variant, by_seed in by_variant.items():
            if not by_seed:
                continue
            per_seed = {s: summarise(acc, sup) for s, acc in by_seed.items()}
            mean_acc = {c: statistics.fmean(acc[c] for acc in by_seed.values()) for c in codes}
            gaps = [d["max_gap"] for d in per_seed.values()]
            out[fkey][variant] = {
                "per_subnet_mean": {c: round(v, 3) for c, v in mean_acc.items()},
                "per_seed": {s: {k: round(v, 3) for k, v in d.items()} for s, d in per_seed.items()},
                "mean": {k: round(statistics.fmean(d[k] for d in per_seed.values()), 3)
                         for k in ("super", "base", "min", "mean", "max_gap")},
                "max_gap_std": round(statistics.stdev(gaps), 3) if len(gaps) > 1 else 0.0,
                "worst_seed_max_gap": round(max(gaps), 3),
                # The acceptance reading: average each sub-network over the seeds, then the worst gap.
                "gap_of_means": round(max(mean_acc[sup] - v for v in mean_acc.values()), 3),
                "floor_ok": max(mean_acc[sup] - v for v in mean_acc.values()) <= FLOOR_POINTS,
            }
    return out


def recommend(summary: dict[str, Any]) -> dict[str, Any]:
    """The recipe whose worst sub-network is best on average over seeds and splits
    (only variants a user can run: every split must have it)."""
    splits = list(summary)
    common = set.intersection(*(set(summary[f]) for f in splits)) if splits else set()
    score = {v: statistics.fmean(summary[f][v]["mean"]["min"] for f in splits) for v in common}
    if not score:
        return {}
    best = max(score, key=lambda v: score[v])
    return {"variant": best, "name": VARIANTS[best], "mean_worst_top1": round(score[best], 3),
            "ranking": sorted(((v, round(s, 3)) for v, s in score.items()), key=lambda t: -t[1]),
            "gap_of_means": {f: summary[f][best]["gap_of_means"] for f in splits},
            "floor_ok": all(summary[f][best]["floor_ok"] for f in splits)}


def print_tables(record: dict[str, Any], codes: list[str]) -> None:
    summary, gmacs = record["summary"], record["gmacs"]
    variants = list(record["variants"])
    for fkey, by_variant in summary.items():
        vs = [v for v in variants if v in by_variant]
        n_seeds = len(next(iter(by_variant.values()))["per_seed"])
        print(f"\n### {record['dataset']['name']}, training fraction {fkey}: top-1 % on the test split "
              f"({record['dataset']['test']} images), {n_seeds} seed(s), input "
              f"{record['dataset']['input_size']}x{record['dataset']['input_size']}\n")
        print("| variant | super | base | mean of 16 | worst | worst gap to super (mean ± std over seeds) "
              "| gap of seed means |")
        print("|---|---|---|---|---|---|---|")
        for v in vs:
            d = by_variant[v]
            m = d["mean"]
            print(f"| ({v}) {VARIANTS[v]} | {m['super']:.2f} | {m['base']:.2f} | {m['mean']:.2f} | {m['min']:.2f} "
                  f"| {m['max_gap']:.2f} ± {d['max_gap_std']:.2f} | {d['gap_of_means']:.2f} |")
        print("\nper sub-network, mean over seeds:\n")
        head = ["code", "GMACs"] + [f"({v})" for v in vs]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for c in codes:
            row = [c, f"{gmacs[c]:.4f}"] + [f"{by_variant[v]['per_subnet_mean'][c]:.2f}" for v in vs]
            print("| " + " | ".join(row) + " |")
    per_epoch = record["train_seconds_per_epoch"]
    print("\ntraining seconds per epoch (mean over seeds): " +
          "; ".join(f"{run}: " + ", ".join(f"{f} {s:.2f}s" for f, s in d.items()) for run, d in per_epoch.items()))
    rec = record["recommendation"]
    if rec:
        print(f"\nrecommended (best worst sub-network, mean over seeds and splits): ({rec['variant']}) {rec['name']}, "
              f"worst {rec['mean_worst_top1']:.2f} %; gap of seed means {rec['gap_of_means']} "
              f"(floor {FLOOR_POINTS} pt: {'PASS' if rec['floor_ok'] else 'FAIL'})")


if __name__ == "__main__":
    main()
