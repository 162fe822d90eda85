"""Issue 13, item 5 (manifest part): schema 1 as a JSON Schema, one clear error naming the field.

The schema must accept every manifest the writers produce (the base directory is the
real exporter's output plus engine and quantization records; the build, quantize and
export suites save through the same validation) and refuse a wrong type, a missing
field or a non-finite number with an AdnError that names the JSON location.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from adn_edge.errors import AdnError
from adn_edge.modeldir import manifest, schema
from adn_edge.modeldir.preprocess import INTERPOLATIONS


@pytest.fixture(scope="module")
def good(base_dir: Path) -> dict[str, Any]:
    return json.loads((base_dir / manifest.FILENAME).read_text())


def _refusal(m: dict[str, Any]) -> str:
    with pytest.raises(AdnError) as err:
        manifest.validate(m, "manifest.json")
    text = str(err.value)
    assert "\n" not in text and text.startswith("manifest.json: ")
    return text


def test_the_schema_is_a_valid_draft_2020_12_schema():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(schema.SCHEMA)


def test_what_the_writers_write_is_valid(good):
    manifest.validate(good)
    assert schema.problems(good) == []
    assert good["subnets"]["1111"]["engines"]["fp16"]["tensorrt_version"]  # the base has every kind of record
    assert good["subnets"]["0101"]["quantization"]["cache"]["path"]
    assert "files_fp16" in good["segments"]["parts"][0] and good["segments"]["parts"][0]["engines"]["full"]


def _set(m: dict[str, Any], where: str, value: Any) -> None:
    keys = where.split(".")
    node: Any = m
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last: Any = int(keys[-1]) if isinstance(node, list) else keys[-1]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()


@pytest.mark.parametrize("where, value, said", [
    ("subnets.1111.files.onnx.sha256", "abc", "subnets.1111.files.onnx.sha256 must be a sha256, 64 lowercase hex"),
    ("subnets.1111.files.onnx.sha256", "A" * 64, "subnets.1111.files.onnx.sha256 must be a sha256"),
    ("subnets.1111.files.onnx.path", None, "subnets.1111.files.onnx.path must be a string (got None)"),
    ("subnets.1111.files.onnx.bytes", -1, "subnets.1111.files.onnx.bytes must be >= 0"),
    ("subnets.1111.files", _DELETE, "subnets.1111 lacks the field(s) 'files'"),
    ("subnets.1111.gmacs", float("nan"), "subnets.1111.gmacs must be a finite number (got nan)"),
    ("subnets.1111.gmacs", float("inf"), "subnets.1111.gmacs must be a finite number"),
    ("subnets.1111.params", 1.5, "subnets.1111.params must be an integer"),
    ("subnets.1111.engines.fp16.gpu", 3, "subnets.1111.engines.fp16.gpu must be a string"),
    ("subnets.1111.engines.fp16.tensorrt_version", _DELETE, "subnets.1111.engines.fp16 lacks the field(s) "
                                                           "'tensorrt_version'"),
    ("subnets.0101.quantization.cache.sha256", "x", "subnets.0101.quantization.cache.sha256 must be a sha256"),
    ("subnets.0101.parity.onnx.rel_err", "small", "subnets.0101.parity.onnx.rel_err must be a finite number"),
    ("num_stages", 4.0, "num_stages must be an integer (got 4.0)"),
    ("num_stages", True, "num_stages must be an integer (got True)"),
    ("num_stages", "4", "num_stages must be an integer"),
    ("num_classes", 0, "num_classes must be >= 1"),
    ("num_classes", 10**30, "num_classes must be <= 1048576"),
    ("input.shape", [None, 3, 32], "input.shape must have at least 4 item(s)"),
    ("input.shape.2", 0, "input.shape[2] must be >= 1"),
    ("input.shape.0", "N", "input.shape[0] must be an integer or null"),
    ("input.mean", [0.5, 0.5], "input.mean must have at least 3 item(s)"),
    ("input.std.1", 0.0, "input.std[1] must be > 0"),
    ("input.interpolation", "cubic", "input.interpolation must be 'bilinear' or"),
    ("input.dtype", "float16", "input.dtype must be 'float32'"),
    ("input", _DELETE, "the top level lacks the field(s) 'input'"),
    ("output", [], "output must be an object"),
    ("source.path", 5, "source.path must be a string or null"),
    ("source", None, "source must be an object"),
    ("subnets", [], "subnets must be an object"),
    ("segments.parts.1.files", _DELETE, "segments.parts[1] lacks the field(s) 'files'"),
    ("segments.parts.1.files.skip", _DELETE, "segments.parts[1].files lacks the field(s) 'skip'"),
    ("segments.parts.0.engines.full.fp16.sha256", None, "segments.parts[0].engines.full.fp16.sha256 must be a "
                                                        "string"),
    ("segments.schema", 2, "segments.schema must be 1"),
    ("segments.parts.3.index", 2, "segments.parts[3].index must be 3"),
    ("segments.count", 3, "segments has count 3 and 4 parts"),
    ("segments.parity.rel_err_max", float("nan"), "segments.parity.rel_err_max must be a finite number"),
    ("subnets.0101.code", "1111", "subnets.0101.code is '1111', not its key '0101'"),
    ("subnets.0101.skip_cfg", "FFFF", "subnets.0101.skip_cfg must be 'TFTF' for code 0101 (got 'FFFF')"),
])
def test_a_bad_field_is_named(good, where, value, said):
    m = copy.deepcopy(good)
    _set(m, where, value)
    assert said in _refusal(m)


def test_a_missing_precision_is_not_damage(good):
    """Graphs of one precision may be absent (``--fp16`` not asked); readers name what is missing."""
    m = copy.deepcopy(good)
    del m["subnets"]["1111"]["files"]["onnx_fp16"]
    del m["segments"]["parts"][2]["files_fp16"]
    manifest.validate(m)


def test_the_missing_fields_of_one_record_are_named_together(good):
    """The engine schema extends the file schema; what both require is one entry, not two."""
    m = copy.deepcopy(good)
    m["segments"]["parts"][0]["engines"]["full"]["fp16"] = {"path": f"{m['arch']}_seg0_full.fp16.engine",
                                                            "sha256": "x"}
    text = _refusal(m)
    assert ("segments.parts[0].engines.full.fp16 lacks the field(s) 'bytes', 'precision', 'tensorrt_version', "
            "'gpu', 'compute_capability'; segments.parts[0].engines.full.fp16.sha256 must be a sha256") in text
    assert text.count("lacks") == 1


def test_unknown_fields_are_accepted_and_ignored(good):
    """Schema 1 grows by adding fields: an older reader keeps reading a newer manifest."""
    m = copy.deepcopy(good)
    m["future"] = {"anything": [1, None]}
    m["subnets"]["1111"]["files"]["onnx"]["mtime"] = 0
    m["subnets"]["1111"]["files"]["onnx_fp8"] = dict(m["subnets"]["1111"]["files"]["onnx"])
    m["segments"]["parts"][0]["note"] = "x"
    m["input"]["crop_pct"] = 0.9
    m["input"]["scale"] = 1 / 255
    manifest.validate(m)


def test_every_problem_is_counted_in_one_paragraph(good):
    m = copy.deepcopy(good)
    m["subnets"]["1111"]["gmacs"] = None
    m["subnets"]["0101"]["params"] = "many"
    m["subnets"]["0000"]["files"]["onnx"]["bytes"] = -5
    m["opset"] = 0
    text = _refusal(m)
    assert "(4 problems in all)" in text
    assert text.index("opset") < text.index("subnets.0000")  # ordered by field: the same message every run
    assert "Re-export the model directory" in text


def test_kind_and_schema_keep_their_own_messages(good):
    with pytest.raises(AdnError, match="is not an adn-edge manifest"):
        manifest.validate([good])
    with pytest.raises(AdnError, match="manifest schema 2, but this adn-edge .* reads schema 1"):
        manifest.validate({**good, "schema": 2})


def test_save_refuses_an_invalid_manifest_and_writes_nothing(good, tmp_path):
    m = copy.deepcopy(good)
    m["num_stages"] = 40
    with pytest.raises(AdnError, match="num_stages must be <= 8"):
        manifest.save(tmp_path, m)
    assert not (tmp_path / manifest.FILENAME).exists()


def test_interpolations_are_the_preprocessors(good):
    assert schema.SCHEMA["$defs"]["input"]["properties"]["interpolation"]["enum"] == list(INTERPOLATIONS)


@pytest.mark.parametrize("text, said", [
    ('{"schema": 1, "num_classes": ' + "9" * 5000 + "}", "cannot be read as JSON|not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "cannot be read as JSON"),
    ('{"schema": 1', "not valid JSON"),
    ("\xff\xfe", "cannot be read"),
])
def test_unreadable_json_is_an_adn_error(tmp_path, text, said):
    (tmp_path / manifest.FILENAME).write_bytes(text.encode("latin-1"))
    with pytest.raises(AdnError, match=said):
        manifest.load(tmp_path)


def test_nan_in_the_file_is_refused(base_dir, tmp_path):
    """Refused by the JSON reader (when it is strict) or by the schema, never loaded."""
    m = json.loads((base_dir / manifest.FILENAME).read_text())
    m["input"]["mean"][0] = float("nan")
    (tmp_path / manifest.FILENAME).write_text(json.dumps(m))  # Python writes NaN, which is not JSON
    with pytest.raises(AdnError, match=r"input\.mean\[0\] must be a finite number \(got nan\)|NaN"):
        manifest.load(tmp_path)
    with pytest.raises(AdnError, match=r"input\.mean\[0\] must be a finite number \(got nan\)"):
        manifest.validate(m)  # what a writer holds in memory


def test_the_runtime_import_does_not_import_jsonschema():
    """jsonschema is imported on the first manifest read, never by `import adn_edge.runtime`."""
    code = "import sys, adn_edge.runtime, adn_edge.modeldir; assert 'jsonschema' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_jsonschema_is_an_adn_error(monkeypatch, good):
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # import raises ImportError
    schema.validator.cache_clear()
    try:
        with pytest.raises(AdnError, match="needs the jsonschema package.*pip install"):
            manifest.validate(good)
    finally:
        schema.validator.cache_clear()
