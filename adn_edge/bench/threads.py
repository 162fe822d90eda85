"""How many CPU threads a benchmark (and the loop it stands for) should give ONNX Runtime.

The rule (``--device cpu``, ``--threads`` not given): **one thread fewer than the CPUs
this process may use, and at least one** (:func:`default_cpu_threads`).

Why: ONNX Runtime's intra-op pool splits every operator across its threads and waits
for the slowest. When the pool holds every core, anything else that wakes up (the OS,
another process, the Python thread timing the call) preempts one of its threads and
the whole inference waits for it: the median barely moves, the tail explodes. Leaving
one core free costs a little peak throughput and buys a tail that can be budgeted.

Measured by ``benchmarks/bench_timing_noise.py`` on the embedded model (3 sub-networks,
2000 back-to-back calls each, 2 rounds), on a 2-core AMD EPYC VM:

* idle (``benchmarks/results/timing_noise.json``): the thread count hardly matters;
  1 thread p50/p99 0.53/0.77 ms (0000) to 1.22/1.86 ms (1111), 2 threads 0.66/0.88 to
  1.16/1.67 ms: one core free costs nothing here;
* shared with other work (``timing_noise_loaded.json``): at a load average of 3-6,
  p99 3.0-5.9 ms with 1 thread against 9.4-11.6 ms with 2 (ONNX Runtime's default,
  one per core: 9.0-14.3 ms); with one other process busy, the slowest call
  (median over two rounds) was 4.4 ms with 1 thread and 142 ms with 2.

A robot's computer, like a developer's, is rarely idle, so the bench times what
holds up under load. The rule generalises the measurement (a pool that leaves a
core free) to larger machines, where it has not been measured here; ``--threads``
overrides it.

"Usable CPUs" are those of the process's affinity mask, capped by a cgroup CPU quota
(a container limited to 2 CPUs of a 64-core host has 2).
"""

from __future__ import annotations

import math
import os

RULE = "usable CPUs - 1, at least 1 (adn_edge/bench/threads.py; measured: benchmarks/results/timing_noise.json)"


def usable_cpus() -> int:
    """CPUs this process may run on: affinity mask, capped by a cgroup v2 quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    from adn_edge.bench.machine import cgroup_cpu_quota

    quota = cgroup_cpu_quota()
    if quota is not None and quota > 0:
        n = min(n, max(1, math.floor(quota)))
    return max(1, n)


def default_cpu_threads(usable: int | None = None) -> int:
    """Intra-op threads for a CPU benchmark: ``usable - 1``, at least 1 (module docstring)."""
    n = usable_cpus() if usable is None else int(usable)
    return max(1, n - 1)
