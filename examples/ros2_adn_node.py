"""A ROS 2 node that classifies camera images with an Adaptive Depth Network, on a deadline.

    python3 examples/ros2_adn_node.py --ros-args \\
        -p model_dir:=engines/resnet50 -p deadline_ms:=30.0 -r image:=/camera/image_raw

Topics (rename them with ``-r``):

* ``image`` (sensor_msgs/Image, in; sensor-data QoS, so a frame that arrives while the
  previous one is still being classified replaces it instead of queueing):
  ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8`` (and ``8UC1``/``8UC3``/``8UC4``,
  read as OpenCV's BGR order);
* ``adn/classification`` (std_msgs/String, out): one JSON object per image, e.g.
  ``{"class_id": 7, "label": "7", "score": 0.98, "subnet": "1111", "deadline_ms": 30.0,
  "latency_ms": 4.1, "preprocess_ms": 0.6, "switched_to": null, "stamp": {...},
  "frame_id": "camera"}``; ``subnet`` is the sub-network that produced the answer,
  ``switched_to`` the one the governor chose for the next image when it changed;
* ``adn/deadline_ms`` (std_msgs/Float32, in): the latency budget from a planner.

Parameters: ``model_dir`` (a directory written by ``adn-edge export``, required),
``deadline_ms`` (default 30.0; ``ros2 param set /adn_classifier deadline_ms 15.0``
changes it at run time), ``backend`` (``auto``), ``segmented`` (false),
``threads`` (0 = the backend's default), ``labels_file`` (one label per line; default
the class index).

Inside: :class:`adn_edge.runtime.EngineSwitcher` holds every sub-network ready and
:class:`adn_edge.runtime.DeadlineGovernor` picks the sub-network for each image from the
latencies it observes (stepping shallower when late, deeper when there is slack; see
docs/runtime.md); :class:`adn_edge.modeldir.preprocess.Preprocess` turns the image into
the model's input as recorded in the model directory. Nothing here imports torch.

Structure: :class:`AdnImageClassifier` is the whole callback logic as a plain class that
does not import rclpy (tests/examples/test_ros2_node.py drives it with fake messages);
rclpy and the message packages are imported only in :func:`main`, which wraps it in a
``rclpy.node.Node``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adn_edge.errors import AdnError
from adn_edge.modeldir.preprocess import Preprocess
from adn_edge.runtime import DeadlineGovernor, EngineSwitcher

NODE_NAME = "adn_classifier"
IMAGE_TOPIC = "image"
RESULT_TOPIC = "adn/classification"
DEADLINE_TOPIC = "adn/deadline_ms"

# encoding -> (channels, BGR order). 8UCn carry no colour order; OpenCV (and cv_bridge) use BGR.
ENCODINGS: dict[str, tuple[int, bool]] = {
    "rgb8": (3, False), "bgr8": (3, True), "rgba8": (4, False), "bgra8": (4, True),
    "mono8": (1, False), "8UC1": (1, False), "8UC3": (3, True), "8UC4": (4, True),
}


def image_to_array(msg: Any) -> tuple[np.ndarray, bool]:
    """A sensor_msgs/Image (anything with ``height``, ``width``, ``encoding``, ``step``
    and ``data``) -> (uint8 ``[H, W, C]`` view of its pixels, True when BGR ordered)."""
    encoding = str(getattr(msg, "encoding", ""))
    if encoding not in ENCODINGS:
        raise AdnError(f"Image encoding {encoding!r} is not supported.",
                       f"Publish one of {', '.join(ENCODINGS)} (e.g. with image_proc or cv_bridge).")
    channels, bgr = ENCODINGS[encoding]
    height, width = int(msg.height), int(msg.width)
    step = int(getattr(msg, "step", 0) or width * channels)
    if height < 1 or width < 1:
        raise AdnError(f"An image of {width}x{height} pixels cannot be classified.")
    if step < width * channels:
        raise AdnError(f"The image's step ({step} bytes) is shorter than a row of {width} {encoding} pixels.")
    data = msg.data
    buf = np.frombuffer(memoryview(data), dtype=np.uint8) if not isinstance(data, (list, tuple)) \
        else np.asarray(data, dtype=np.uint8)
    if buf.size < step * height:
        raise AdnError(f"The image holds {buf.size} bytes; {height} rows of {step} bytes need {step * height}.")
    rows = buf[:step * height].reshape(height, step)  # rows may be padded beyond width * channels
    return rows[:, :width * channels].reshape(height, width, channels), bgr


class AdnImageClassifier:
    """Image message in, classification record out, the sub-network chosen by a governor.

    Plain Python (no rclpy): the ROS node below only moves messages in and out of it.
    """

    def __init__(self, model_dir: str | Path, *, deadline_ms: float = 30.0, backend: str = "auto",
                 segmented: bool = False, threads: int | None = None, labels: Sequence[str] | None = None,
                 **backend_options: Any) -> None:
        if threads:
            backend_options["threads"] = int(threads)
        self.switcher = EngineSwitcher.open(model_dir, backend=backend, segmented=segmented, **backend_options)
        try:
            self.preprocess = Preprocess.from_manifest(self.switcher.manifest)
            self.governor = DeadlineGovernor.for_switcher(self.switcher, deadline_ms=_deadline(deadline_ms))
            num_classes = int(self.switcher.manifest["num_classes"])
            if labels is not None and len(labels) != num_classes:
                raise AdnError(f"{len(labels)} labels were given, but the model has {num_classes} classes.",
                               "Give one label per line, in class-index order.")
            self.labels = list(labels) if labels is not None else [str(i) for i in range(num_classes)]
        except BaseException:
            self.switcher.close()
            raise

    @property
    def deadline_ms(self) -> float:
        return self.governor.deadline_ms

    def set_deadline(self, deadline_ms: float) -> str | None:
        """A new latency budget (ms); returns the sub-network switched to at once, if any."""
        return self.governor.set_deadline(_deadline(deadline_ms))

    def classify(self, frame: np.ndarray, *, bgr: bool = False) -> dict[str, Any]:
        """One HWC uint8 frame -> the record published for it (see the module docstring)."""
        t0 = time.perf_counter()
        batch = self.preprocess.batch(frame, bgr=bgr)
        t1 = time.perf_counter()
        before = len(self.governor.switches)
        subnet = self.governor.current
        logits = self.governor.infer(batch)[0]
        t2 = time.perf_counter()
        z = logits.astype(np.float64) - float(np.max(logits))
        probs = np.exp(z) / np.exp(z).sum()
        k = int(np.argmax(probs))
        return {"class_id": k, "label": self.labels[k], "score": round(float(probs[k]), 6), "subnet": subnet,
                "deadline_ms": self.governor.deadline_ms, "latency_ms": round((t2 - t1) * 1e3, 3),
                "preprocess_ms": round((t1 - t0) * 1e3, 3),
                "switched_to": self.governor.current if len(self.governor.switches) > before else None}

    def on_image(self, msg: Any) -> dict[str, Any]:
        """The image callback: decode, preprocess, infer through the governor."""
        frame, bgr = image_to_array(msg)
        record = self.classify(frame, bgr=bgr)
        header = getattr(msg, "header", None)
        if header is not None:
            stamp = getattr(header, "stamp", None)
            record["stamp"] = {"sec": int(getattr(stamp, "sec", 0)), "nanosec": int(getattr(stamp, "nanosec", 0))}
            record["frame_id"] = str(getattr(header, "frame_id", ""))
        return record

    def on_image_json(self, msg: Any) -> str:
        """:meth:`on_image` as the JSON text of the published std_msgs/String."""
        return json.dumps(self.on_image(msg), sort_keys=True)

    def close(self) -> None:
        self.switcher.close()

    def __enter__(self) -> AdnImageClassifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _deadline(value: Any) -> float:
    try:
        ms = float(value)
    except (TypeError, ValueError):
        raise AdnError(f"The deadline must be a number of milliseconds, not {value!r}.") from None
    if not (math.isfinite(ms) and ms > 0):
        raise AdnError(f"The deadline must be a positive number of milliseconds, not {value!r}.")
    return ms


def read_labels(path: str | Path) -> list[str]:
    """One label per line (blank lines at the end ignored)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]


# --------------------------------------------------------------------------- ROS 2


def main(argv: list[str] | None = None) -> int:
    try:
        import rclpy
        from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
        from rclpy.node import Node
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image
        from std_msgs.msg import Float32, String
    except ImportError as exc:
        print(f"error: this example needs ROS 2 (rclpy, sensor_msgs, std_msgs): {exc}. Source your ROS 2 "
              "setup (e.g. `source /opt/ros/humble/setup.bash`) in the environment where adn-edge is installed.",
              file=sys.stderr)
        return 2

    class AdnNode(Node):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(NODE_NAME)
            self.declare_parameter("model_dir", "")
            # dynamic typing: `-p deadline_ms:=30` (an integer) is as good as 30.0
            self.declare_parameter("deadline_ms", 30.0, ParameterDescriptor(
                dynamic_typing=True, description="latency budget of one inference, ms"))
            self.declare_parameter("backend", "auto")
            self.declare_parameter("segmented", False)
            self.declare_parameter("threads", 0)
            self.declare_parameter("labels_file", "")
            p = {name: self.get_parameter(name).value
                 for name in ("model_dir", "deadline_ms", "backend", "segmented", "threads", "labels_file")}
            if not p["model_dir"]:
                raise AdnError("The parameter model_dir is not set.",
                               "Pass --ros-args -p model_dir:=DIR (a directory written by `adn-edge export`).")
            labels = read_labels(p["labels_file"]) if p["labels_file"] else None
            self.classifier = AdnImageClassifier(p["model_dir"], deadline_ms=p["deadline_ms"],
                                                 backend=p["backend"], segmented=bool(p["segmented"]),
                                                 threads=int(p["threads"]) or None, labels=labels)
            sw = self.classifier.switcher
            self.get_logger().info(f"{sw.arch} on {sw.backend_name}: {len(sw.codes)} sub-networks, ladder "
                                   f"{' < '.join(self.classifier.governor.ladder)}, deadline {p['deadline_ms']} ms")
            self.add_on_set_parameters_callback(self._on_parameters)
            self.publisher = self.create_publisher(String, RESULT_TOPIC, 10)
            self.create_subscription(Image, IMAGE_TOPIC, self._on_image, qos_profile_sensor_data)
            self.create_subscription(Float32, DEADLINE_TOPIC, self._on_deadline, 10)

        def _on_image(self, msg: Any) -> None:
            try:
                text = self.classifier.on_image_json(msg)
            except AdnError as exc:
                self.get_logger().warning(f"image skipped: {exc}", throttle_duration_sec=5.0)
                return
            self.publisher.publish(String(data=text))

        def _on_deadline(self, msg: Any) -> None:
            try:
                changed = self.classifier.set_deadline(msg.data)
            except AdnError as exc:
                self.get_logger().warning(str(exc))
                return
            if changed:
                self.get_logger().info(f"deadline {msg.data:.1f} ms: switched to {changed}")

        def _on_parameters(self, params: list[Any]) -> Any:
            for param in params:
                if param.name == "deadline_ms":
                    try:
                        self.classifier.set_deadline(param.value)
                    except AdnError as exc:
                        return SetParametersResult(successful=False, reason=str(exc))
                elif param.name in ("model_dir", "backend", "segmented", "threads", "labels_file"):
                    return SetParametersResult(successful=False,
                                               reason=f"{param.name} is read at start; restart the node")
            return SetParametersResult(successful=True)

        def destroy_node(self) -> None:
            self.classifier.close()
            super().destroy_node()

    rclpy.init(args=argv)
    node = None
    try:
        node = AdnNode()
        rclpy.spin(node)
    except AdnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
