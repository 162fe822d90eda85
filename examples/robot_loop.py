"""A fixed-rate control loop whose inference deadline moves, kept on time by the governor.

    python examples/robot_loop.py engines/resnet50 --hz 10 --ticks 120

Every tick grabs a frame (random here; a camera on a robot), runs the active
sub-network through :class:`adn_edge.runtime.DeadlineGovernor` and prints which one
ran, its latency and the deadline. The deadline follows a schedule that a planner
might impose (relaxed when the robot is parked, tight when it moves fast), scaled
to this machine's measured speed so that the governor has something to do.

Needs only numpy and a backend (ONNX Runtime or TensorRT): no torch.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from adn_edge.errors import AdnError
from adn_edge.runtime import DeadlineGovernor, EngineSwitcher


def measure(sw: EngineSwitcher, code: str, frame: np.ndarray, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sw.infer(frame, subnet=code)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def schedule(ticks: int, deep_ms: float, shallow_ms: float) -> list[float]:
    """Relaxed, then tight, then in between: what a planner might ask as speed changes."""
    relaxed = 1.6 * deep_ms
    tight = max(1.3 * shallow_ms, 0.5 * (shallow_ms + deep_ms) * 0.8)
    middle = 0.5 * (relaxed + tight)
    third = max(ticks // 3, 1)
    return [relaxed if t < third else tight if t < 2 * third else middle for t in range(ticks)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", help="a directory written by `adn-edge export`")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--segmented", action="store_true", help="run sub-networks as chains of stage graphs")
    ap.add_argument("--hz", type=float, default=10.0, help="loop rate (0 = as fast as possible)")
    ap.add_argument("--ticks", type=int, default=90)
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    args = ap.parse_args(argv)

    options = {"threads": args.threads} if args.threads else {}
    try:
        sw = EngineSwitcher.open(args.model_dir, backend=args.backend, segmented=args.segmented, **options)
    except AdnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with sw:
        shape = [1 if d is None else d for d in sw.describe()["input"]["shape"]]
        rng = np.random.default_rng(0)
        frame = rng.standard_normal(shape, dtype=np.float32)
        deep_ms = measure(sw, sw.codes[0], frame)
        shallow_ms = measure(sw, sw.codes[-1], frame)
        plan = schedule(args.ticks, deep_ms, shallow_ms)
        gov = DeadlineGovernor.for_switcher(sw, deadline_ms=plan[0])
        print(f"{sw.arch} on {sw.backend_name}: {sw.codes[0]} {deep_ms:.1f} ms, {sw.codes[-1]} {shallow_ms:.1f} ms; "
              f"ladder {' < '.join(gov.ladder)}")
        print(f"{'tick':>4}  {'deadline':>9}  {'subnet':>6}  {'latency':>9}  note")
        period = 1.0 / args.hz if args.hz > 0 else 0.0
        next_tick = time.perf_counter()
        missed = 0
        for tick, deadline in enumerate(plan):
            note = ""
            if deadline != gov.deadline_ms:
                changed = gov.set_deadline(deadline)
                note = f"deadline -> {deadline:.1f} ms" + (f", pre-emptive switch to {changed}" if changed else "")
            frame = rng.standard_normal(shape, dtype=np.float32)  # a camera frame, normalised
            before = len(gov.switches)
            code = gov.current
            t0 = time.perf_counter()
            gov.infer(frame)
            ms = (time.perf_counter() - t0) * 1e3
            if ms > deadline:
                missed += 1
                note += " MISSED"
            if len(gov.switches) > before:
                s = gov.switches[-1]
                note += f" -> {s['to']} ({s['reason']})"
            print(f"{tick:4d}  {deadline:7.1f}ms  {code:>6}  {ms:7.2f}ms  {note.strip()}")
            next_tick += period
            delay = next_tick - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                next_tick = time.perf_counter()
        print(f"{missed} of {args.ticks} ticks missed their deadline; {len(gov.switches)} switches")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
