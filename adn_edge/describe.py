"""What a file or directory holds: the library side of ``adn-edge info``.

Works on checkpoints (any format :mod:`adn_edge.checkpoint` reads), ONNX graphs
(metadata, I/O, op counts), TensorRT engines (size and their manifest record;
deserialising needs TensorRT) and model directories (the manifest, summarised).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adn_edge.errors import AdnError


def describe(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise AdnError(f"{str(p)!r} does not exist.", "Pass a checkpoint, an .onnx/.engine file or a model directory.")
    if p.is_dir():
        return _directory(p)
    if p.suffix == ".onnx":
        return _onnx(p)
    if p.suffix in (".engine", ".plan"):
        return _engine(p)
    return _checkpoint(p)


def _directory(p: Path) -> dict[str, Any]:
    from adn_edge.modeldir import manifest

    data = manifest.load(p)
    subnets = []
    # The order of every other table: super-net first, then by descending GMACs.
    codes = manifest.resolve_codes(data, "all") if data["subnets"] else []
    for code in codes:
        e = data["subnets"][code]
        subnets.append({"code": code, "skip_cfg": e.get("skip_cfg"), "gmacs": e.get("gmacs"), "params": e.get("params"),
                        "files": sorted(e.get("files", {})), "engines": sorted(e.get("engines", {})),
                        "parity_fp32": e.get("parity", {}).get("onnx", {}).get("rel_err")})
    extra = sorted(q.name for q in p.iterdir() if q.suffix == ".json" and q.name != manifest.FILENAME)
    segments = []
    for part in (data.get("segments") or {}).get("parts") or []:
        for kind in manifest.SEGMENT_KINDS.values():
            files = ["onnx"] + [f"onnx_{prec}" for prec, group in manifest.SEGMENT_FILE_KEYS.items()
                                if prec != "fp32" and kind in (part.get(group) or {})]
            segments.append({"segment": part.get("index"), "kind": kind, "input_shape": part.get("input_shape"),
                             "output_shape": part.get("output_shape"), "files": files,
                             "engines": sorted(((part.get("engines") or {}).get(kind) or {}))})
    return {"kind": "model-directory", "path": str(p), "arch": data["arch"], "num_stages": data["num_stages"],
            "num_classes": data["num_classes"], "input": data["input"], "source": data.get("source"),
            "opset": data.get("opset"), "subnets": subnets, "segments": segments, "results": extra}


def _onnx(p: Path) -> dict[str, Any]:
    import onnx

    from adn_edge.export.onnx_graph import metadata, op_counts

    from adn_edge.fileio import read_bytes

    data = read_bytes(p, "ONNX file")  # a FIFO or device is refused, never waited on
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types
        raise AdnError(f"{str(p)!r} cannot be read as ONNX ({exc}); it is truncated or not an ONNX file.") from None

    def io(values: Any) -> list[dict[str, Any]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param or d.dim_value for d in t.shape.dim]
            out.append({"name": v.name, "elem_type": onnx.TensorProto.DataType.Name(t.elem_type), "shape": dims})
        return out

    n_params = sum(int(_numel(i.dims)) for i in model.graph.initializer)
    return {"kind": "onnx", "path": str(p), "bytes": p.stat().st_size, "opset": [
        {"domain": o.domain or "ai.onnx", "version": o.version} for o in model.opset_import],
        "metadata": metadata(model), "inputs": io(model.graph.input), "outputs": io(model.graph.output),
        "initializers": len(model.graph.initializer), "initializer_elements": n_params, "ops": op_counts(model)}


def _numel(dims: Any) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _engine(p: Path) -> dict[str, Any]:
    from adn_edge.modeldir import manifest

    info: dict[str, Any] = {"kind": "tensorrt-engine", "path": str(p), "bytes": p.stat().st_size}
    mpath = manifest.path_in(p.parent)
    if mpath.exists():
        data = manifest.load(p.parent)
        for code, e in data["subnets"].items():
            for prec, rec in e.get("engines", {}).items():
                if rec.get("path") == p.name:
                    info.update({"subnet": code, "precision": prec, "record": rec})
        for part in (data.get("segments") or {}).get("parts") or []:
            for kind, by_precision in (part.get("engines") or {}).items():
                for prec, rec in by_precision.items():
                    if rec.get("path") == p.name:
                        info.update({"segment": part.get("index"), "form": kind, "precision": prec, "record": rec})
    info["note"] = "engines are specific to the TensorRT version and GPU that built them"
    return info


def _checkpoint(p: Path) -> dict[str, Any]:
    from adn_edge import checkpoint

    ckpt = checkpoint.read(p)
    # As `adn-edge export` decides (checkpoint.build_model): the header's, else the one
    # registered architecture the weights fit; arch_source says which.
    arch = ckpt.header.get("arch")
    arch_source = "header" if arch else None
    if not arch:
        arch = checkpoint.guess_arch(ckpt.state_dict)
        arch_source = "guessed" if arch else None
    n = sum(int(t.numel()) for k, t in ckpt.state_dict.items() if t.is_floating_point())
    return {"kind": "checkpoint", "path": str(p), "bytes": p.stat().st_size, "sha256": ckpt.sha256,
            "container": ckpt.container, "weights": ckpt.weights, "arch": arch, "arch_source": arch_source,
            "num_classes": ckpt.num_classes,
            "entries": len(ckpt.state_dict), "float_elements": n, "header": ckpt.header,
            "epoch": ckpt.extra.get("epoch") if isinstance(ckpt.extra.get("epoch"), int) else None}
