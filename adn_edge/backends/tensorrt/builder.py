"""The thin TensorRT-facing part of ``adn-edge build``: parse, configure, build, inspect.

Every decision (which graph, which flags, whether to rebuild, what the inspector's
JSON means) is made in plain, unit-tested Python elsewhere in this package; this
module only translates those decisions into TensorRT 10 API calls. No GPU is
available to CI, so it is type-checked with mypy against the published TensorRT
stubs instead (``mypy.ini``): keep it small and keep every call in the stubs.

Version notes. JetPack 6 ships TensorRT 10.3, JetPack 7.2 10.16, the x86 wheels are
11.x: every ``trt.`` name used here exists in all three, or sits behind a version
branch or ``hasattr`` (``.ci/trt_names.py`` checks this against the API listings in
``tests/fixtures/tensorrt/``, and the test double exposes exactly one version's names).
TensorRT 11 removed the FP16/INT8 builder flags and the INT8 calibrator classes;
:func:`adn_edge.backends.tensorrt.plan.select_source` never asks for them on 11.x
(strongly typed networks from the float16 or Q/DQ graph instead), and the calibrator
class is defined only when it is built, on 10.x: a module-level subclass of
``trt.IInt8EntropyCalibrator2`` made this module fail to import on TensorRT 11.

Two defaults of TensorRT are changed on purpose: TF32 is cleared for fp32 engines
(on by default, it makes an "fp32" engine compute convolutions with a 10-bit
mantissa on Ampere and later, every Orin included), and builds are
``ProfilingVerbosity.DETAILED`` for the precision check, which the runner turns back
down per execution context (DETAILED NVTX ranges cost latency in every enqueue).

Importing this module without TensorRT raises :class:`~adn_edge.errors.AdnError`
with install instructions; :mod:`adn_edge.backends.tensorrt.build` imports it only when building.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from adn_edge.backends.tensorrt import env as trt_env
from adn_edge.backends.tensorrt.calibration import CalibrationData, CalibrationPlan
from adn_edge.backends.tensorrt.options import BuildOptions, ProfileShapes
from adn_edge.backends.tensorrt import plan as plan_mod
from adn_edge.backends.tensorrt.plan import BuiltEngine, Job
from adn_edge.errors import BuildFailure
from adn_edge.backends.tensorrt.env import Environment
from adn_edge.errors import AdnError
from adn_edge.fileio import write_bytes
from adn_edge.backends.cuda import CudaApi, DeviceBuffer, Stream, open_cuda

try:
    import tensorrt as trt
except ImportError as _exc:  # pragma: no cover - depends on the machine
    raise trt_env.missing_tensorrt(_exc) from None

log = logging.getLogger("adn_edge.backends.tensorrt.build")


class _Logger(trt.ILogger):
    """Keeps TensorRT's errors and warnings so a failed build can say why."""

    def __init__(self, verbose: bool = False) -> None:
        trt.ILogger.__init__(self)
        self.verbose = verbose
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
        if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
            self.errors.append(msg)
            log.error("TensorRT: %s", msg)
        elif severity == trt.ILogger.Severity.WARNING:
            self.warnings.append(msg)
            log.warning("TensorRT: %s", msg)
        elif self.verbose:
            log.info("TensorRT: %s", msg)

    def take(self) -> tuple[list[str], list[str]]:
        errors, warnings = self.errors, self.warnings
        self.errors, self.warnings = [], []
        return errors, warnings


def _dims(shape: tuple[int, ...]) -> trt.Dims:
    return trt.Dims(list(shape))


def parser_errors(parser: trt.OnnxParser) -> list[str]:
    """Every parser error, each with the ONNX node (index, name, operator) it is about."""
    out = []
    for i in range(parser.num_errors):
        err: trt.ParserError = parser.get_error(i)
        code = str(err.code()).rsplit(".", 1)[-1]
        node = err.node()
        if node >= 0:
            where = f"node {node}"
            try:
                name, op = err.node_name(), err.node_operator()
            except AttributeError:  # parsers older than the 10.13 stubs may lack them
                name, op = "", ""
            if name:
                where += f" {name!r}"
            if op:
                where += f" ({op})"
        else:
            where = "graph"
        out.append(f"{where}: {code}: {err.desc().strip()}")
    return out


class CalibratorState:
    """The calibrator's bookkeeping, apart from TensorRT's base class so that it exists
    (and is tested) on every version; :func:`entropy_calibrator` wraps it for 10.x."""

    def __init__(self, plan: CalibrationPlan, cuda: CudaApi | None) -> None:
        self.plan = plan
        self.cuda = cuda
        self.data: CalibrationData | None = plan.data
        self.batches_fed = 0
        self.error: BaseException | None = None
        self._iter = iter(self.data.batches()) if self.data is not None else iter(())
        self._buf: DeviceBuffer | None = None
        self._stream: Stream | None = None
        if self.data is not None and cuda is not None:
            nbytes = int(np.prod(self.data.shape)) * 4
            with cuda.activate():
                self._buf = cuda.alloc(nbytes)
                self._stream = cuda.create_stream()

    def batch_size(self) -> int:
        return self.data.batch_size if self.data is not None else 1

    def next_batch(self, names: list[str]) -> list[int]:
        # TensorRT's Python wrapper turns any exception raised here into "no more
        # batches": everything is caught, kept, and re-raised after the build.
        if self._buf is None or self._stream is None or self.cuda is None or self.error is not None:
            return []
        try:
            batch = next(self._iter)
            host = np.ascontiguousarray(batch, dtype=np.float32)
            with self.cuda.activate():
                self.cuda.copy_htod_async(self._buf, host, self._stream)
                self.cuda.synchronize(self._stream)  # TensorRT reads the buffer on its own stream
        except StopIteration:
            return []
        except BaseException as exc:  # noqa: BLE001 - re-raised after the build
            self.error = exc
            return []
        self.batches_fed += 1
        return [self._buf.ptr for _ in names]

    @property
    def incomplete(self) -> str | None:
        """Why the scales do not stand for the whole calibration set, or None."""
        if self.error is not None:
            return f"calibration failed: {self.error}"
        if self.data is not None and self.cuda is not None and self.batches_fed < len(self.data):
            return f"calibration stopped after {self.batches_fed} of {len(self.data)} batches"
        return None

    # TensorRT's documented protocol: return None when there is no usable cache.
    def read_cache(self) -> bytes | None:
        if self.plan.reuse_cache and self.plan.cache_path.exists():
            return self.plan.cache_path.read_bytes()
        return None

    def write_cache(self, cache: memoryview | bytes) -> None:
        if self.incomplete is not None:
            return  # scales from part of the data must not become a cache later builds trust
        try:
            write_bytes(self.plan.cache_path, bytes(cache))
        except BaseException as exc:  # noqa: BLE001 - re-raised after the build
            self.error = exc

    def release(self) -> None:
        if self.cuda is not None:
            with self.cuda.activate():
                if self._buf is not None:
                    self.cuda.free(self._buf)
                    self._buf = None
                if self._stream is not None:
                    self.cuda.destroy_stream(self._stream)
                    self._stream = None


def entropy_calibrator(plan: CalibrationPlan, cuda: CudaApi | None) -> tuple[trt.IInt8Calibrator, CalibratorState]:
    """TensorRT 10's ``IInt8EntropyCalibrator2`` over a :class:`CalibratorState`: the
    object to hand to ``config.int8_calibrator``, and the state to read afterwards.

    The class is made here, not at module level: TensorRT 11 has no calibrator classes
    (INT8 comes from Q/DQ graphs there), and a module-level subclass made every build
    fail at import, fp16 included.
    """
    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise AdnError(f"TensorRT {trt.__version__} has no INT8 calibrator (TensorRT 11 reads INT8 scales from Q/DQ "
                       "graphs only).", "Build INT8 engines from `adn-edge quantize` graphs, or use TensorRT 10.")
    state = CalibratorState(plan, cuda)

    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        """Feeds :class:`CalibrationData` batches to TensorRT 10."""

        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return state.batch_size()

        def get_batch(self, names: list[str]) -> list[int]:
            return state.next_batch(names)

        def read_calibration_cache(self) -> bytes | None:
            return state.read_cache()

        def write_calibration_cache(self, cache: memoryview | bytes) -> None:
            state.write_cache(cache)

    return _EntropyCalibrator(), state


class TrtToolchain:
    """One TensorRT builder, runtime and timing cache for all sub-networks of a model.

    The timing cache is the point of building all 2^S sub-networks in one process:
    they share most layer shapes, so every build after the first mostly reuses
    measured tactics instead of timing them again.
    """

    def __init__(self, env: Environment, cuda: str = "auto", device: int = 0, verbose: bool = False) -> None:
        self.env = env
        self.cuda_kind = cuda
        self.device = device
        self.logger = _Logger(verbose)
        self.builder = trt.Builder(self.logger)
        self.runtime = trt.Runtime(self.logger)
        self._cache: trt.ITimingCache | None = None
        self._cache_bytes_seen = b""
        self._cuda: CudaApi | None = None

    # ---------------------------------------------------------------- timing cache

    def load_timing_cache(self, path: Path) -> str:
        """Load (or start) the shared timing cache; returns a line for the report.

        TensorRT answers a cache from another version by ignoring it or returning no
        cache at all, and one from another GPU by refusing it in ``set_timing_cache``:
        every case starts a new cache (the default file name carries the version and
        GPU, so this is rare) rather than mixing tactics or failing the build."""
        blob = path.read_bytes() if path.is_file() else b""
        config = self.builder.create_builder_config()
        cache: trt.ITimingCache | None = config.create_timing_cache(blob) if blob else None
        note = f"timing cache {path.name}: " + (f"reusing {len(blob)} bytes" if blob else "new")
        if cache is not None and not config.set_timing_cache(cache, False):
            cache = None
        if cache is None:
            if blob:
                note = f"timing cache {path.name}: written by another TensorRT/GPU (or damaged), starting a new one"
            cache = config.create_timing_cache(b"")
            if cache is None:
                raise BuildFailure(f"TensorRT {self.env.tensorrt_version} could not create an empty timing cache.")
        self._cache = cache
        self._cache_bytes_seen = blob
        return note

    def save_timing_cache(self, path: Path) -> None:
        """Merge what another process wrote meanwhile, then write atomically."""
        if self._cache is None:
            return
        if path.is_file():
            disk = path.read_bytes()
            if disk and disk != self._cache_bytes_seen:
                other: trt.ITimingCache | None = self.builder.create_builder_config().create_timing_cache(disk)
                if other is None or not self._cache.combine(other, False):
                    log.warning("Timing cache %s was written for another TensorRT/GPU; overwriting it.", path)
        blob = bytes(self._cache.serialize())
        write_bytes(path, blob)
        self._cache_bytes_seen = blob

    # ---------------------------------------------------------------- building

    def _network_flags(self, job: Job) -> int:
        # 11.x networks are always strongly typed (and the flag may be gone); on 10.x
        # strong typing is opt-in.
        if job.source.strongly_typed and self.env.trt_major < 11:
            return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        return 0

    def _cuda_api(self) -> CudaApi:
        if self._cuda is None:
            self._cuda = open_cuda(self.cuda_kind, self.device)
        return self._cuda

    def build(self, job: Job, onnx_path: Path, onnx_bytes: bytes, options: BuildOptions,
              profile: ProfileShapes, calibration: CalibrationPlan | None = None) -> BuiltEngine:
        t0 = time.perf_counter()
        self.logger.take()
        network = self.builder.create_network(self._network_flags(job))
        parser = trt.OnnxParser(network, self.logger)  # owns the weights: keep alive until built
        if not parser.parse(onnx_bytes, str(onnx_path)):
            errors = parser_errors(parser)
            raise BuildFailure(
                f"TensorRT {self.env.tensorrt_version}'s ONNX parser rejected {onnx_path.name} "
                f"({len(errors)} error(s)): " + "; ".join(errors)
                + ". Check that this TensorRT supports every operator of the graph's opset, or re-export "
                "with another --opset.")
        names = [network.get_input(i).name for i in range(network.num_inputs)]
        if names != [profile.input_name]:
            raise AdnError(f"{onnx_path.name} has inputs {names}, but the manifest describes one input "
                           f"{profile.input_name!r}.", "Re-export the model directory.")

        config = self.builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
        config.builder_optimization_level = options.opt_level
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # for the precision check
        opt_profile = self.builder.create_optimization_profile()
        opt_profile.set_shape(profile.input_name, _dims(profile.min), _dims(profile.opt), _dims(profile.max))
        if config.add_optimization_profile(opt_profile) < 0:
            raise BuildFailure(f"TensorRT rejected the optimisation profile {profile.as_record()} of {job.engine}.")
        if self._cache is not None and not config.set_timing_cache(self._cache, False):
            log.warning("TensorRT refused the timing cache for %s; building without it.", job.engine)
        if options.precision == "fp32" and not options.tf32:
            config.clear_flag(trt.BuilderFlag.TF32)  # on by default: "fp32" would compute in TF32
        if job.source.fp16_flag or job.source.int8_flag:
            if self.env.trt_major >= 11:  # select_source never asks; a guard, not a path
                raise AdnError(f"TensorRT {self.env.tensorrt_version} has no FP16/INT8 builder flags.",
                               plan_mod.PRECISION_SUPPORT[11])
            if job.source.fp16_flag:
                config.set_flag(trt.BuilderFlag.FP16)
            if job.source.int8_flag:
                config.set_flag(trt.BuilderFlag.INT8)

        calibrator: CalibratorState | None = None
        if job.source.calibrate:
            if calibration is None:
                raise AdnError(f"{job.engine} needs INT8 calibration data.", "Pass --calib IMAGES_DIR.")
            if self.env.trt_major >= 11:
                raise AdnError(f"TensorRT {self.env.tensorrt_version} has no INT8 calibrator.",
                               plan_mod.PRECISION_SUPPORT[11])
            needs_data = calibration.data is not None and not calibration.reuse_cache
            trt_calibrator, calibrator = entropy_calibrator(calibration, self._cuda_api() if needs_data else None)
            config.int8_calibrator = trt_calibrator
            # A dynamic-batch network needs a fixed-shape calibration profile, even
            # when the scales come from the cache.
            cal_shape = calibration.data.shape if calibration.data is not None else (
                options.calib_batch, *profile.opt[1:])
            cal = self.builder.create_optimization_profile()
            cal.set_shape(profile.input_name, _dims(cal_shape), _dims(cal_shape), _dims(cal_shape))
            config.set_calibration_profile(cal)
        try:
            # None on failure, although the stubs do not say so.
            serialized: trt.IHostMemory | None = self.builder.build_serialized_network(network, config)
        finally:
            if calibrator is not None:
                calibrator.release()
        errors, warnings = self.logger.take()
        if calibrator is not None and calibrator.error is not None:
            raise calibrator.error
        if calibrator is not None and calibrator.incomplete is not None:
            raise BuildFailure(f"INT8 calibration of {job.engine} is incomplete ({calibrator.incomplete}); "
                               "no engine or calibration cache was written.")
        if serialized is None:
            detail = "; ".join(errors[-5:]) or "no error was logged"
            raise BuildFailure(f"TensorRT could not build {job.engine} from {onnx_path.name}: {detail}.")
        plan = bytes(serialized)
        seconds = time.perf_counter() - t0
        return BuiltEngine(
            plan=plan,
            inspector_json=self.inspect(plan, profile),
            seconds=seconds,
            calibration_batches=calibrator.batches_fed if calibrator is not None else None,
            log=tuple(warnings),
        )

    def inspect(self, plan: bytes, profile: ProfileShapes) -> str:
        """Layer information with concrete shapes (dynamic shapes otherwise read as
        "N/A due to dynamic shapes", with no data type)."""
        engine: trt.ICudaEngine | None = self.runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise BuildFailure("TensorRT could not deserialize the engine it has just built.")
        context: trt.IExecutionContext | None = engine.create_execution_context()
        if context is None:
            raise BuildFailure("TensorRT could not create an execution context to inspect the new engine.")
        context.set_input_shape(profile.input_name, _dims(profile.opt))
        inspector = engine.create_engine_inspector()
        if hasattr(inspector, "execution_context"):
            inspector.execution_context = context
        else:  # the attribute's name in older 10.x bindings
            setattr(inspector, "context", context)  # noqa: B010
        return inspector.get_engine_information(trt.LayerInformationFormat.JSON)

    def close(self) -> None:
        if self._cuda is not None:
            self._cuda.close()
            self._cuda = None
