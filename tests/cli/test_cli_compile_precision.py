"""mcgraph compile --precision fp16|int8 end to end, on a checkpoint trained on the synthetic set.

The report's top-1 figures are recomputed here: fp32 from the checkpoint in PyTorch, the written
file in onnxruntime, on the same first test images."""
import json
from collections import Counter

import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import assert_one_line_error, ort_logits, run_cli, run_cli_ok
from tiny_trained import trained_checkpoint

import mcgraph
from mcgraph.train.data import load_data, make_loader


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return trained_checkpoint(tmp_path_factory)


def _test_split(n):
    return next(iter(make_loader(load_data("synthetic"), "test", n, shuffle=False, augment=False)))


def _ort_top1(path, x, y):
    return 100 * float((ort_logits(path, x).argmax(1) == y.numpy()).mean())


def test_int8_json_report_and_file(ckpt, tmp_path):
    out = tmp_path / "m.int8.onnx"
    r = run_cli_ok("compile", ckpt, "-o", out, "--precision", "int8", "--data", "synthetic",
                   "--calib-images", 128, "--eval-images", 200, "--json")
    rep = json.loads(r.stdout)                               # stdout is the JSON and nothing else
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.int8.onnx"]   # nothing staged left
    # the fp32 export was verified against PyTorch before quantizing; old keys are all there
    assert rep["onnx_max_abs_diff"] < 1e-4 and rep["opset"] == 18 and rep["onnx_path"] == str(out)
    assert rep["modules_before"] == rep["modules_after"] == 9 and rep["removed"] == []
    assert rep["precision"] == "int8" and rep["eval_images"] == 200
    quant = rep["quantization"]
    assert quant["calib_split"] == "train" and quant["calib_images"] == 128
    assert quant["per_channel"] is True and quant["calib_seed"] == 0          # the defaults
    ops = Counter(n.op_type for n in onnx.load(str(out)).graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    assert rep["onnx_ops"] == dict(ops)
    # top-1 on the first 200 test images: fp32 as PyTorch computes it, int8 as the file does
    x, y = _test_split(200)
    with torch.no_grad():
        top1_fp32 = 100 * float((mcgraph.load(ckpt).eval()(x).argmax(1) == y).float().mean())
    assert set(rep["top1"]) == {"fp32", "int8"}               # percent, as `mcgraph eval` reports
    assert rep["top1"]["fp32"] == pytest.approx(top1_fp32, abs=1e-4) and top1_fp32 >= 95
    assert rep["top1"]["int8"] == pytest.approx(_ort_top1(out, x, y), abs=1e-4)
    assert abs(rep["top1"]["int8"] - rep["top1"]["fp32"]) <= 2
    assert rep["agreement"]["int8"] >= 97
    assert rep["notes"] == []


def test_int8_is_lossy_and_says_so(ckpt, tmp_path):
    """Never under "verified": its difference, top-1 against fp32's and agreement are shown."""
    r = run_cli_ok("compile", ckpt, "-o", tmp_path / "m.onnx", "--precision", "int8", "--data",
                   "synthetic", "--calib-images", 64, "--eval-images", 100)
    lines = r.stdout.splitlines()
    assert any(ln.startswith("verified: the fp32 ONNX export matches PyTorch") for ln in lines)
    [lossy] = [ln for ln in lines if ln.startswith("int8")]
    assert "lossy, not verified" in lossy and "top-1" in lossy and "points" in lossy
    assert "same prediction as fp32 on" in lossy
    assert not any(ln.startswith("verified") and "int8" in ln for ln in lines)


def test_fp16_table_and_file(ckpt, tmp_path):
    out, report = tmp_path / "m.fp16.onnx", tmp_path / "r.json"
    r = run_cli_ok("compile", ckpt, "-o", out, "--precision", "fp16", "--data", "synthetic",
                   "--eval-images", 64, "--report", report)
    lines = r.stdout.splitlines()
    assert ["precision", "fp16"] in [ln.split() for ln in lines]           # the table's rows
    assert ["eval_images", "64"] in [ln.split() for ln in lines]
    assert any(ln.startswith("verified: the fp32 ONNX export matches PyTorch") for ln in lines)
    assert any(ln.startswith("fp16: within tolerance of fp32") for ln in lines)
    rep = json.loads(report.read_text())
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {t.data_type for t in model.graph.initializer if t.dims and len(t.dims) == 4} \
        == {onnx.TensorProto.FLOAT16}                        # every conv weight
    assert rep["precision"] == "fp16" and 0 < rep["precision_max_abs_diff"] <= 2e-2 * max(
        1.0, rep["output_scale"])
    assert "reference evaluator" in r.stdout
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert set(rep["top1"]) == {"fp32"} and "note: fp16 top-1 not measured" in r.stdout
    x, y = _test_split(64)
    assert rep["top1"]["fp32"] == pytest.approx(
        100 * float((mcgraph.load(ckpt).eval()(x).argmax(1) == y).float().mean()), abs=1e-4)


def test_int8_without_data_is_one_line(ckpt, tmp_path):
    r = run_cli("compile", ckpt, "-o", tmp_path / "m.onnx", "--precision", "int8")
    assert assert_one_line_error(r) == r.stderr.strip() == (
        "error: compile: --precision int8 needs --data: its calibration images come from that "
        "data set's training split")
    assert not list(tmp_path.iterdir())
    r = run_cli("compile", ckpt, "-o", tmp_path / "m.onnx", "--precision", "int8",
                "--data", "fashion-mnist", "--data-dir", tmp_path / "nothing")
    assert_one_line_error(r, "fashion-mnist")
