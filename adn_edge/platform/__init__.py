"""What this machine is, read from the text its tools print: Jetson release, power mode,
clocks, ``nvidia-smi``. Pure parsers, torch-free, importing only the core modules.

Two users need the same answers and must not disagree: ``adn-edge doctor`` (is this
board ready for the TensorRT path?) and the benchmark's machine-state record
(``adn_edge.bench.machine``: which clocks did these numbers run at?). Each parser takes
the text a command printed (or a file held) and never raises: a format it does not
know gives ``None`` fields, not an exception, because a new JetPack must never cost a
user their benchmark or their diagnosis. Every parser is tested on every real output
recorded in ``tests/fixtures/jetson/`` (L4T R32 to R39 and desktop GPUs).

- :mod:`~adn_edge.platform.jetson`: ``/etc/nv_tegra_release``, the device-tree model,
  ``nvpmodel -q [--verbose]`` and ``nvpmodel.conf``, ``jetson_clocks --show``, package
  lists (dpkg/apt), CUDA and TensorRT version strings, CUDA error reports;
- :mod:`~adn_edge.platform.nvidia_smi`: the ``nvidia-smi`` table (desktop, Jetson and
  Windows layouts), ``--query-gpu ... --format=csv`` and ``-L``.
"""

from __future__ import annotations

__all__ = ["jetson", "nvidia_smi"]
