"""Jetson power from ``tegrastats``: a line parser and a subprocess sampler.

``tegrastats`` is the one power meter every JetPack ships, but its line format
changed with every generation (see ``shared/fixtures/tegrastats/README.md``):

- rails print ``NAME inst/avg`` in mW without a unit (JetPack 4), ``NAME 5704mW/5704mW``
  (JetPack 5/6) or three values (JetPack 7); only the first, instantaneous, value is
  integrated, because the second is a running average since tegrastats started;
- the module-input rail is ``VDD_IN`` (or ``POM_5V_IN`` on the Nano); AGX Orin has none,
  so its module power is the sum of its rails (``NC`` excluded) and we say so;
- CPU+GPU power is a different rail on each board, and on no board a GPU-only one
  that we could honestly call "GPU power", so it is ``cpu_gpu_w`` with the rail(s)
  named beside it.

The parser never raises on a line: garbage comes back as :class:`ParseFailure`, so
one corrupt line cannot abort a ten-minute benchmark. The sampler stamps each line
when it is read (lines carry at most a second-resolution date) and owns the
subprocess's whole life: terminate, then kill, on stop, error or Ctrl-C.
"""

from __future__ import annotations

import collections
import math
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, ClassVar

from adn_edge.errors import AdnError, PowerSourceError
from adn_edge.power.base import PowerSource
from adn_edge.power.energy import PowerSample

MODULE_RAILS = ("VDD_IN", "POM_5V_IN", "VIN")
"""Module-input rails, by preference. Boards without one get the sum of their rails."""

CPU_GPU_RAILS: tuple[tuple[str, ...], ...] = (
    ("VDD_CPU_GPU_CV",),              # Orin Nano/NX, Xavier NX: CPU + GPU + vision accelerators, one rail
    ("VDD_GPU_SOC", "VDD_CPU_CV"),    # AGX Orin: GPU+SoC and CPU+vision accelerators
    ("VDD_GPU", "VDD_CPU_SOC_MSS"),   # Thor (JetPack 7)
    ("VDD_CPU", "VDD_GPU"),           # TX2 (JetPack 4), AGX Xavier
    ("VDD_SYS_CPU", "VDD_SYS_GPU"),   # TX1/TX2 on L4T 28
    ("POM_5V_CPU", "POM_5V_GPU"),     # Nano (JetPack 4)
    ("CPU", "GPU"),                   # AGX Xavier (JetPack 4)
)
"""Rail sets that together carry the CPU and GPU, first match wins."""

UNUSED_RAILS = frozenset({"NC"})
"""Unconnected monitor channels: listed, never summed."""

_DATE = re.compile(r"^\s*(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})")
_RAM = re.compile(r"(?<!\S)RAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"(?<!\S)SWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"(?<!\S)CPU \[([^\]]*)\]")
_CPU_CORE = re.compile(r"^(\d+)%(?:@(\d+))?$")
_GR3D = re.compile(r"(?<!\S)GR3D_FREQ (\d+)%(?:@\[?([\d,]+)\]?)?")
_EMC = re.compile(r"(?<!\S)EMC_FREQ (\d+)%(?:@(\d+))?")
_TEMP = re.compile(r"(?<!\S)([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C(?:/\S*)?(?!\S)")
_RAIL = re.compile(r"(?<!\S)([A-Za-z][A-Za-z0-9_]*) (\d+)(mW)?/(\d+)(mW)?(?:/(\d+)(mW)?)?(?!\S)")
_TEMP_OFF = -256.0


@dataclass(frozen=True)
class TegrastatsReading:
    """One parsed line. Powers in watts, rails as printed in mW."""

    line: str
    date: str | None
    rails_mw: dict[str, int]
    """Instantaneous value of every rail, in printed order (a repeated name gets ``_2``...)."""
    rails_avg_mw: dict[str, int]
    """The running average tegrastats prints second: informative, never integrated."""
    module_w: float | None
    module_rail: str | None
    """``VDD_IN``/``POM_5V_IN``, or ``A+B+...`` when summed (see ``module_summed``)."""
    module_summed: bool
    """True when the board has no module-input rail and module power is the sum of its rails."""
    cpu_gpu_w: float | None
    cpu_gpu_rail: str | None
    ram_used_mb: int | None = None
    ram_total_mb: int | None = None
    swap_used_mb: int | None = None
    swap_total_mb: int | None = None
    cpu_load_pct: tuple[int | None, ...] = ()
    """Per core; None for an offline core."""
    cpu_freq_mhz: tuple[int | None, ...] = ()
    gpu_load_pct: int | None = None
    gpu_freq_mhz: tuple[int, ...] = ()
    """One value per GPC on JetPack 6 (``GR3D_FREQ 0%@[305,305]``), one before."""
    emc_load_pct: int | None = None
    emc_freq_mhz: int | None = None
    temps_c: dict[str, float | None] = field(default_factory=dict)
    """Lower-cased sensor names; None for a sensor that is off (``-256C``)."""

    ok: ClassVar[bool] = True

    @property
    def rails_w(self) -> dict[str, float]:
        return {k: v / 1000.0 for k, v in self.rails_mw.items()}


@dataclass(frozen=True)
class ParseFailure:
    """A line that is not tegrastats output (reported, counted, never raised)."""

    line: str
    reason: str

    ok: ClassVar[bool] = False


def _rails(line: str) -> tuple[dict[str, int], dict[str, int]]:
    inst: dict[str, int] = {}
    avg: dict[str, int] = {}
    seen: dict[str, int] = {}
    for m in _RAIL.finditer(line):
        name = m.group(1)
        units = [m.group(3), m.group(5)] + ([m.group(7)] if m.group(6) is not None else [])
        if len(set(units)) != 1:  # "RAM 2461/7620MB" style or mixed units: not a rail
            continue
        seen[name] = seen.get(name, 0) + 1
        key = name if seen[name] == 1 else f"{name}_{seen[name]}"
        while key in inst:  # a printed name that looks like one of our suffixed keys
            key += "_"
        inst[key] = int(m.group(2))
        avg[key] = int(m.group(4))
    return inst, avg


def _printed_name(key: str) -> str:
    """The name as printed, without the ``_2`` we add to a repeated one."""
    m = re.fullmatch(r"(.+)_\d+", key)
    return m.group(1) if m and m.group(1) in UNUSED_RAILS else key


def _module(rails: dict[str, int]) -> tuple[float | None, str | None, bool]:
    for name in MODULE_RAILS:
        if name in rails:
            return rails[name] / 1000.0, name, False
    used = [k for k in rails if _printed_name(k) not in UNUSED_RAILS]
    if not used:
        return None, None, False
    return sum(rails[k] for k in used) / 1000.0, "+".join(used), True


def _cpu_gpu(rails: dict[str, int]) -> tuple[float | None, str | None]:
    for names in CPU_GPU_RAILS:
        if all(n in rails for n in names):
            return sum(rails[n] for n in names) / 1000.0, "+".join(names)
    return None, None


def _cpu_cores(body: str) -> tuple[tuple[int | None, ...], tuple[int | None, ...]]:
    loads: list[int | None] = []
    freqs: list[int | None] = []
    for entry in body.split(","):
        m = _CPU_CORE.match(entry.strip())
        if m:
            loads.append(int(m.group(1)))
            freqs.append(int(m.group(2)) if m.group(2) else None)
        else:  # "off" or something unknown: an offline core
            loads.append(None)
            freqs.append(None)
    return tuple(loads), tuple(freqs)


def parse_line(line: str | bytes) -> TegrastatsReading | ParseFailure:
    """Parse one line of tegrastats output; never raises.

    Unknown fields are ignored (new JetPacks add engines every release). A line with
    none of RAM, CPU or power rails is a :class:`ParseFailure`.
    """
    try:
        if isinstance(line, bytes):
            line = line.decode("utf-8", errors="replace")
        return _parse(str(line).rstrip("\r\n"))
    except Exception as exc:  # noqa: BLE001 - the contract is "never raises"
        return ParseFailure(str(line)[:500], f"unexpected parser error: {type(exc).__name__}: {exc}")


def _parse(text: str) -> TegrastatsReading | ParseFailure:
    if not text.strip():
        return ParseFailure(text, "empty line")
    ram = _RAM.search(text)
    cpu = _CPU.search(text)
    rails, rails_avg = _rails(text)
    if not (ram or cpu or rails):
        return ParseFailure(text[:500], "no RAM, CPU or power-rail fields")
    module_w, module_rail, summed = _module(rails)
    cpu_gpu_w, cpu_gpu_rail = _cpu_gpu(rails)
    date = _DATE.match(text)
    swap = _SWAP.search(text)
    loads, freqs = _cpu_cores(cpu.group(1)) if cpu else ((), ())
    gr3d = _GR3D.search(text)
    emc = _EMC.search(text)
    temps: dict[str, float | None] = {}
    for m in _TEMP.finditer(text):
        value = float(m.group(2))
        temps[m.group(1).lower()] = None if value <= _TEMP_OFF or not math.isfinite(value) else value
    return TegrastatsReading(
        line=text,
        date=date.group(1) if date else None,
        rails_mw=rails,
        rails_avg_mw=rails_avg,
        module_w=module_w,
        module_rail=module_rail,
        module_summed=summed,
        cpu_gpu_w=cpu_gpu_w,
        cpu_gpu_rail=cpu_gpu_rail,
        ram_used_mb=int(ram.group(1)) if ram else None,
        ram_total_mb=int(ram.group(2)) if ram else None,
        swap_used_mb=int(swap.group(1)) if swap else None,
        swap_total_mb=int(swap.group(2)) if swap else None,
        cpu_load_pct=loads,
        cpu_freq_mhz=freqs,
        gpu_load_pct=int(gr3d.group(1)) if gr3d else None,
        gpu_freq_mhz=tuple(int(f) for f in gr3d.group(2).split(",") if f) if gr3d and gr3d.group(2) else (),
        emc_load_pct=int(emc.group(1)) if emc else None,
        emc_freq_mhz=int(emc.group(2)) if emc and emc.group(2) else None,
        temps_c=temps,
    )


# --------------------------------------------------------------------------------------
# The sampler
# --------------------------------------------------------------------------------------

MISSING_HINT = (
    "tegrastats ships with JetPack in the nvidia-l4t-tools package and lives at "
    "/usr/bin/tegrastats; install it with `sudo apt install nvidia-l4t-tools`, put it on "
    "PATH, or use --power none to measure latency only. On some boards reading every "
    "rail needs root: run the bench with sudo."
)


def _signal_group(proc: subprocess.Popen[str], sig: int) -> None:
    # The tool runs in its own session, so its process group id is its pid: signalling
    # the group also reaches anything a wrapper script started.
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError, OSError):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


def _reap(proc: subprocess.Popen[str], term_timeout_s: float) -> None:
    """Terminate, then kill, then wait: the process is gone (and reaped) afterwards."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=term_timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    else:
        proc.wait()


class TegrastatsSource(PowerSource):
    """Runs ``tegrastats --interval MS`` and turns its lines into :class:`PowerSample`.

    ``executable`` defaults to ``tegrastats`` found on PATH. ``line_buffered`` wraps
    the command in ``stdbuf -oL`` when available, because a C program writing to a
    pipe may buffer several lines and ruin the arrival stamps.
    """

    name: ClassVar[str] = "tegrastats"

    def __init__(self, interval_ms: float | None = 50, executable: str | None = None, *,
                 line_buffered: bool = True, first_line_timeout_s: float | None = None,
                 term_timeout_s: float = 2.0) -> None:
        interval_ms = 50 if interval_ms is None else interval_ms
        super().__init__(interval_ms)
        self.executable = self._find(executable)
        self.line_buffered = line_buffered
        self.first_line_timeout_s = (first_line_timeout_s if first_line_timeout_s is not None
                                     else 3.0 + 10 * float(interval_ms) / 1000)
        self.term_timeout_s = term_timeout_s
        self.readings = 0
        self.failures: list[ParseFailure] = []
        """The first few unparsable lines, for the report."""
        self.failure_count = 0
        self.board: TegrastatsReading | None = None
        """The first reading with power: which rails this board has."""
        self._proc: subprocess.Popen[str] | None = None
        self._last_pid: int | None = None
        self._threads: list[threading.Thread] = []
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._stopping = False
        self._exit_code: int | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    @staticmethod
    def _find(executable: str | None) -> str:
        name = executable or "tegrastats"
        found = shutil.which(name)
        if found is None:
            where = "on PATH" if os.sep not in name else "at that path"
            raise AdnError(f"--power tegrastats needs the `tegrastats` tool, which was not found {where} "
                           f"({name!r}).", MISSING_HINT)
        return found

    @property
    def pid(self) -> int | None:
        """The tool's process id (kept after stop, so callers can check it is gone)."""
        return self._proc.pid if self._proc else self._last_pid

    def command(self) -> list[str]:
        interval = str(max(1, int(round(float(self.interval_ms or 50)))))
        cmd = [self.executable, "--interval", interval]
        stdbuf = shutil.which("stdbuf") if self.line_buffered else None
        return [stdbuf, "-oL", *cmd] if stdbuf else cmd

    # -- life cycle -------------------------------------------------------------
    def start(self) -> None:
        if self._proc is not None:
            return
        self.executable = self._find(self.executable)  # may have vanished since construction
        self._stopping = False
        self._exit_code = None
        try:
            self._proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          stdin=subprocess.DEVNULL, text=True, bufsize=1,
                                          errors="replace", start_new_session=True)
        except OSError as exc:
            raise AdnError(f"tegrastats at {self.executable!r} could not be started: {exc.strerror or exc}.",
                           MISSING_HINT) from None
        self._last_pid = self._proc.pid
        # Reaps the process if the owner forgets stop() or the interpreter exits.
        self._finalizer = weakref.finalize(self, _reap, self._proc, self.term_timeout_s)
        self._running = True
        self._threads = [threading.Thread(target=self._read_stdout, args=(self._proc,),
                                          name="tegrastats-stdout", daemon=True),
                         threading.Thread(target=self._read_stderr, args=(self._proc,),
                                          name="tegrastats-stderr", daemon=True)]
        for th in self._threads:
            th.start()
        try:
            self._wait_first()
        except BaseException:
            self._shutdown()
            raise

    def _wait_first(self) -> None:
        deadline = time.perf_counter() + self.first_line_timeout_s
        with self._cond:
            while not self._samples and self._running and self.readings + self.failure_count < 3:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.05))
            if self._samples:
                return
        if not self._running:  # stdout closed: it exited (or is exiting)
            self._wait_exit()
            self._shutdown()
            raise self._died("before printing a reading")
        if self.readings + self.failure_count:
            example = self.failures[0].line if self.failures else ""
            raise PowerSourceError(
                "tegrastats runs but its lines carry no power rails, so energy cannot be measured"
                + (f" (first line: {example[:200]!r})." if example else "."),
                "Some boards only report rails to root: run the bench with sudo, or use --power none.")
        raise PowerSourceError(
            f"tegrastats printed nothing within {self.first_line_timeout_s:.1f} s of starting.",
            "Check that `tegrastats --interval 50` prints lines when run by hand (it may need sudo), "
            "or use --power none.")

    def _wait_exit(self) -> None:
        if self._proc is not None:
            try:
                self._proc.wait(timeout=self.term_timeout_s)
            except subprocess.TimeoutExpired:
                pass

    def _died_on_its_own(self) -> bool:
        proc = self._proc
        return proc is not None and not self._stopping and (proc.poll() is not None or not self._running)

    def stop(self) -> None:
        """Stop tegrastats (terminate, then kill) and join the readers. Raises
        :class:`PowerSourceError` afterwards if it had died on its own while in use."""
        if self._proc is None:
            return
        died = self._died_on_its_own()
        if died:
            self._wait_exit()
        self._shutdown()
        if died:
            raise self._died("while the benchmark was running")

    def check(self) -> None:
        if self._died_on_its_own():
            self._wait_exit()
            self._shutdown()
            raise self._died("while the benchmark was running")

    def _shutdown(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._stopping = True
        try:
            _reap(proc, self.term_timeout_s)
        finally:
            self._running = False
            for th in self._threads:
                if th is not threading.current_thread():
                    th.join(timeout=5.0)
            if not any(th.is_alive() for th in self._threads):
                # Closing a pipe another thread still reads could block; leak it instead.
                for stream in (proc.stdout, proc.stderr):
                    if stream is not None:
                        try:
                            stream.close()
                        except OSError:
                            pass
            self._exit_code = proc.returncode
            if self._finalizer is not None and proc.returncode is not None:
                self._finalizer.detach()  # kept if a second Ctrl-C cut the reaping short
            self._proc = None
            with self._cond:
                self._cond.notify_all()

    def _died(self, when: str) -> PowerSourceError:
        err = " | ".join(line.strip() for line in self._stderr if line.strip())
        detail = f" Its error output: {err[-400:]}" if err else ""
        return PowerSourceError(
            f"tegrastats exited {when} (exit code {self._exit_code}).{detail}",
            "Run `tegrastats --interval 50` by hand to see why; some boards need sudo for the power "
            "rails. Use --power none to measure latency only.")

    # -- reader threads ----------------------------------------------------------
    def _read_stdout(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        try:
            for raw in iter(proc.stdout.readline, ""):
                t = time.perf_counter()  # stamp first: parsing must not delay the clock
                self._handle(raw, t)
        except (OSError, ValueError):
            pass  # pipe closed under us during shutdown
        finally:
            with self._cond:
                if not self._stopping:
                    self._running = False  # died on its own; check()/stop() report it
                self._cond.notify_all()

    def _read_stderr(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        try:
            for raw in iter(proc.stderr.readline, ""):
                self._stderr.append(raw.rstrip("\n"))
        except (OSError, ValueError):
            pass

    def _handle(self, raw: str, t: float) -> None:
        if not raw.strip():
            return
        reading = parse_line(raw)
        if isinstance(reading, ParseFailure):
            with self._cond:
                self.failure_count += 1
                if len(self.failures) < 10:
                    self.failures.append(reading)
                self._cond.notify_all()
            return
        with self._cond:
            self.readings += 1
            if reading.module_w is None:
                self._cond.notify_all()
                return
            if self.board is None:
                self.board = reading
        self._add(PowerSample(t=t, module_w=reading.module_w, cpu_gpu_w=reading.cpu_gpu_w,
                              rails_w=reading.rails_w))

    # -- reporting -------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        board = self.board
        samples = self.samples
        gaps = [b.t - a.t for a, b in zip(samples, samples[1:])]
        observed = sorted(gaps)[len(gaps) // 2] * 1000 if gaps else None
        notes = []
        if board is not None and board.module_summed:
            notes.append(f"this board has no module-input rail: module power is the sum of {board.module_rail} "
                         "(NC channels excluded)")
        if board is not None and board.cpu_gpu_rail:
            notes.append(f"cpu_gpu_w is {board.cpu_gpu_rail}; no Jetson rail measures the GPU alone")
        if gaps and self.interval_ms and sum(g < 0.2 * self.interval_ms / 1000 for g in gaps) > len(gaps) / 4:
            notes.append("lines arrived in bursts (output buffering?): per-sample timing is unreliable")
        return {
            "source": "tegrastats",
            "rail": board.module_rail if board else None,
            "module_summed": board.module_summed if board else None,
            "cpu_gpu_rail": board.cpu_gpu_rail if board else None,
            "interval_ms": self.interval_ms,
            "observed_interval_ms": round(observed, 3) if observed is not None else None,
            "executable": self.executable,
            "readings": self.readings,
            "parse_failures": self.failure_count,
            "notes": notes,
        }
