"""INT8 calibration data for segment engines: the images, carried to each segment's input.

TensorRT's entropy calibrator measures the activation ranges of the tensors of the
graph it builds, starting from the graph's input. Segment 0 reads images, but
segment k reads the feature map that segments 0..k-1 produce, and which one depends
on the flags of those earlier segments: part k of ``1011`` and of ``0011`` see
different distributions. So the batches for segment k are the calibration images
run through the float32 segment graphs 0..k-1 with ONNX Runtime, the earlier flags
cycling through all 2^k prefixes batch by batch: the scales then cover the input of
part k in every sub-network it belongs to, not only in the super-net.

The digest of such a set covers the images and the preceding graphs: a re-exported
segment 1 makes the calibration caches of segments 2..S-1 stale, not only its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adn_edge.backends.tensorrt.calibration import CalibrationSet
from adn_edge.errors import AdnError
from adn_edge.modeldir.manifest import SEGMENT_KINDS


def prefix_code(batch_index: int, length: int) -> str:
    """The flags of segments 0..length-1 for calibration batch ``batch_index``: all
    2^length prefixes in turn, starting with the super-net's (all ones)."""
    if length == 0:
        return ""
    value = (2 ** length - 1) - batch_index % (2 ** length)
    return format(value, f"0{length}b")


class SegmentChain:
    """The float32 segment graphs, run by ONNX Runtime, to make feature maps.

    Sessions are created on first use and kept for every segment's calibration set.
    ONNX Runtime is used (not TensorRT) because the features must come from the
    exact float32 graphs, before any engine exists.
    """

    def __init__(self, directory: Path, parts: Sequence[Mapping[str, Any]]) -> None:
        self.directory = Path(directory)
        self.parts = list(parts)
        self._sessions: dict[tuple[int, str], Any] = {}

    def session(self, index: int, flag: str) -> Any:
        key = (index, flag)
        if key not in self._sessions:
            try:
                import onnxruntime as ort
            except ImportError:
                raise AdnError("Calibrating INT8 segment engines runs the preceding segments with ONNX Runtime, "
                               "which is not installed.",
                               "pip install onnxruntime (or onnxruntime-gpu), or build segments in fp16.") from None
            from adn_edge.modeldir.manifest import verify_file

            path = verify_file(self.directory, dict(self.parts[index]["files"][SEGMENT_KINDS[flag]]))
            so = ort.SessionOptions()
            so.log_severity_level = 3
            self._sessions[key] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        return self._sessions[key]

    def run(self, prefix: str, batch: np.ndarray) -> np.ndarray:
        """``batch`` (images) through segments 0..len(prefix)-1 in the forms ``prefix`` names."""
        x = batch
        for k, flag in enumerate(prefix):
            sess = self.session(k, flag)
            x = np.asarray(sess.run([self.parts[k]["output"]], {self.parts[k]["input"]: x})[0], dtype=np.float32)
        return x

    def graph_digests(self, upto: int) -> list[str]:
        return [str(self.parts[k]["files"][kind]["sha256"]) for k in range(upto)
                for kind in SEGMENT_KINDS.values()]


class SegmentCalibration:
    """The calibration batches of segment ``index``: same interface as
    :class:`~adn_edge.backends.tensorrt.calibration.CalibrationSet` for the builder."""

    def __init__(self, images: CalibrationSet, chain: SegmentChain, index: int) -> None:
        self.source = images
        self.chain = chain
        self.index = index
        self.batch_size = images.batch_size
        self.images = images.images
        self.warnings = images.warnings
        dims = chain.parts[index]["input_shape"][1:]
        self.shape: tuple[int, ...] = (self.batch_size, *(int(d) for d in dims))
        self._digest: str | None = None

    def __len__(self) -> int:
        return len(self.source)

    def batches(self) -> Iterator[np.ndarray]:
        for b, batch in enumerate(self.source.batches()):
            out = self.chain.run(prefix_code(b, self.index), batch)
            if out.shape != self.shape:
                raise AdnError(f"Segments 0..{self.index - 1} produced {list(out.shape)} where segment {self.index} "
                               f"reads {list(self.shape)}; the segments record is damaged.",
                               "Re-export the segments.")
            yield np.ascontiguousarray(out)

    def digest(self) -> str:
        if self._digest is None:
            h = hashlib.sha256(self.source.digest().encode())
            h.update(f"segment {self.index}".encode())
            for d in self.chain.graph_digests(self.index):
                h.update(d.encode())
            self._digest = h.hexdigest()
        return self._digest

    def as_record(self) -> dict[str, Any]:
        rec = self.source.as_record()
        # images_sha256 is what staleness compares: here it covers the preceding graphs too.
        rec.update({"images_sha256": self.digest(), "source_images_sha256": self.source.digest(),
                    "segment": self.index,
                    "features": f"images through segments 0..{self.index - 1}, all 2^{self.index} prefixes in turn"
                    if self.index else "images"})
        return rec
