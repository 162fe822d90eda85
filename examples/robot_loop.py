"""A fixed-rate control loop whose inference deadline moves, kept on time by the governor.

    python examples/robot_loop.py engines/resnet50 --hz 10 --ticks 120

Every tick grabs a frame (random here; a camera on a robot), runs the active
sub-network through :class:`adn_edge.runtime.DeadlineGovernor` and prints which one
ran, its latency and the deadline. The deadline follows a schedule that a planner
might impose (relaxed when the robot is parked, tight when it moves fast), scaled
to this machine's measured speed so that the governor has something to do.

The speed is the *paced* one: a loop that sleeps between ticks runs each inference
colder than a back-to-back benchmark does (on a 2-core CPU ~0.6 ms paced against
0.3-0.4 ms hot), so deadlines scaled from hot numbers are missed. The budgets come
from the bench report's paced loop at this rate (``adn-edge bench DIR --device cpu
--hz 10``) when it has one, else from a few paced calls measured here at the loop's
rate (either raised to what a few calls take now, when slower: a shared machine's
speed drifts); the governor's ladder and predictions use the paced figures too.

CPU threads: as ``adn-edge bench`` uses by default (usable CPUs - 1, at least 1;
``--threads`` overrides), so that the loop runs as its budgets were measured.

Needs only numpy and a backend (ONNX Runtime or TensorRT): no torch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from adn_edge.errors import AdnError
from adn_edge.runtime import DeadlineGovernor, EngineSwitcher


def measure(sw: EngineSwitcher, code: str, frame: np.ndarray, period_s: float, runs: int = 8) -> float:
    """The slowest of ``runs`` calls made as the loop makes them: one every ``period_s``
    (sleeping in between; back to back when 0). The slowest, because a deadline is
    broken by the slow calls; a bench report's p99 replaces this when it has one."""
    times = []
    for _ in range(runs):
        if period_s > 0:
            time.sleep(period_s)
        t0 = time.perf_counter()
        sw.infer(frame, subnet=code)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.max(times))


def threads_for(model_dir: str, backend: str, segmented: bool) -> int | None:
    """The bench's default CPU threads when the backend that will run takes threads."""
    from adn_edge.bench.threads import default_cpu_threads
    from adn_edge.modeldir import manifest
    from adn_edge.runtime import resolve_backend

    name = resolve_backend(backend, segmented=segmented, manifest=manifest.load(Path(model_dir))).name
    return default_cpu_threads() if name.startswith(("onnxruntime", "torch")) else None


def loop_latencies(sw: EngineSwitcher, gov: DeadlineGovernor, frame: np.ndarray, hz: float) -> tuple[dict[str, float],
                                                                                                      str]:
    """{code: ms} of the ladder's ends for the schedule, and where they came from: the
    bench report's paced p99 at this rate when it has one, else a few calls paced at
    this rate measured here. Both are checked against calls made now: a shared
    machine's speed drifts (measured: 0.9 ms paced p50 for one sub-network in the
    bench, 1.1-1.3 ms 20 minutes later), and the slower figure wins."""
    ends = [gov.ladder[-1], gov.ladder[0]]
    period = 1.0 / hz if hz > 0 else 0.0
    now = {c: measure(sw, c, frame, period) for c in ends}
    how = f"paced at {hz:g} Hz" if hz > 0 else "back to back"
    if gov.estimates_hz is not None and abs(gov.estimates_hz - hz) <= 1e-6 * hz:  # paced at this very rate
        lat = {c: max(gov.estimates[c], now[c]) for c in ends}
        raised = [c for c in ends if now[c] > gov.estimates[c]]
        return lat, gov.estimates_source + (f"; {', '.join(raised)} slower now (slowest of 8 calls {how})"
                                            if raised else "")
    return now, f"measured here ({how}, slowest of 8 calls); `adn-edge bench DIR --hz {hz:g}` gives p99s"


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
    ap.add_argument("--threads", type=int, default=None,
                    help="ONNX Runtime intra-op threads (default: as adn-edge bench, usable CPUs - 1)")
    args = ap.parse_args(argv)

    try:
        threads = args.threads or threads_for(args.model_dir, args.backend, args.segmented)
        options = {"threads": threads} if threads else {}
        sw = EngineSwitcher.open(args.model_dir, backend=args.backend, segmented=args.segmented, **options)
    except AdnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with sw:
        shape = [1 if d is None else d for d in sw.describe()["input"]["shape"]]
        rng = np.random.default_rng(0)
        frame = rng.standard_normal(shape, dtype=np.float32)
        gov = DeadlineGovernor.for_switcher(sw, deadline_ms=1e9)  # the ladder first; the deadline follows
        lat, source = loop_latencies(sw, gov, frame, args.hz)
        deep, shallow = gov.ladder[-1], gov.ladder[0]
        plan = schedule(args.ticks, lat[deep], lat[shallow])
        gov.set_deadline(plan[0])
        print(f"{sw.arch} on {sw.backend_name}{f', {threads} thread(s)' if threads else ''}: {deep} {lat[deep]:.2f} ms, "
              f"{shallow} {lat[shallow]:.2f} ms ({source}); ladder {' < '.join(gov.ladder)} "
              f"(estimates: {gov.estimates_source})")
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
