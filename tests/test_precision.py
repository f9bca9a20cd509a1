"""fp16 and int8 copies of an exported model (mcgraph.precision), checked against the fp32 file.

The model is resnet20 (1x16x16) trained briefly on the synthetic data set (tiny_trained.py,
about 99% test top-1), so agreement and top-1 on its 256 labelled test images mean something."""
from collections import Counter
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import ort_logits
from onnx.reference import ReferenceEvaluator
from tiny_trained import trained_checkpoint

import mcgraph
from mcgraph import precision
from mcgraph.cli import cli_message
from mcgraph.config import CompileConfig
from mcgraph.passes import export_onnx
from mcgraph.train.data import Data, DataSpec, TensorImageDataset, load_data, make_loader

FP16_TOLERANCE = 2e-2      # relative to the output scale: float16 keeps ~3 significant digits


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    ckpt = trained_checkpoint(tmp_path_factory)
    slim, _ = mcgraph.compile(mcgraph.load(ckpt))
    fp32 = export_onnx(slim, tmp_path_factory.mktemp("precision") / "fp32.onnx", (1, 16, 16))
    data = load_data("synthetic")
    x, y = next(iter(make_loader(data, "test", 256, shuffle=False, augment=False)))
    return SimpleNamespace(fp32=fp32, data=data, x=x.numpy(), y=y.numpy(),
                           ref=ort_logits(fp32, x.numpy()))


def producers(model):
    return {o: n for n in model.graph.node for o in n.output}


@pytest.mark.parametrize("per_channel,scheme", [(True, "u8s8"), (False, "u8s8"), (True, "s8s8")])
def test_int8_is_qdq_and_agrees_with_fp32(env, tmp_path, per_channel, scheme):
    out = tmp_path / "int8.onnx"
    info = precision.quantize_int8(env.fp32, out, env.data, images=256, per_channel=per_channel,
                                   scheme=scheme)
    assert info["calib_split"] == "train" and info["calib_images"] == 256
    assert info["scheme"] == scheme
    model = onnx.load(str(out))
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]
    # every Conv and Gemm reads its weight from DequantizeLinear(int8 initializer, scale)
    inits, made_by = {t.name: t for t in model.graph.initializer}, producers(model)
    weighted = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(weighted) == 20                                # resnet20: 19 Conv + the head
    for n in weighted:
        dq = made_by[n.input[1]]
        assert dq.op_type == made_by[n.input[0]].op_type == "DequantizeLinear"
        assert inits[dq.input[0]].data_type == onnx.TensorProto.INT8
        act_zero = inits[made_by[n.input[0]].input[2]]           # the activation's zero point
        assert act_zero.data_type == (onnx.TensorProto.UINT8 if scheme == "u8s8"
                                      else onnx.TensorProto.INT8)
        scale = onnx.numpy_helper.to_array(inits[dq.input[1]])
        if n.op_type == "Conv":   # one scale per output channel, or one for the tensor
            assert scale.shape == ((inits[dq.input[0]].dims[0],) if per_channel else ())
    # on the 256 labelled test images: fp32 is accurate, int8 predicts as it does
    q = ort_logits(out, env.x)
    top1_fp32, top1_int8 = (env.ref.argmax(1) == env.y).mean(), (q.argmax(1) == env.y).mean()
    agree = (q.argmax(1) == env.ref.argmax(1)).mean()
    assert top1_fp32 >= 0.95 and agree >= 0.97 and abs(top1_int8 - top1_fp32) <= 0.02, \
        (top1_fp32, top1_int8, agree)
    assert 0 < np.abs(q - env.ref).max()                     # it is quantized, not a copy
    ev = precision.top1_on_test_split({"fp32": env.fp32, "int8": out}, env.data)
    assert ev.images == 256 and ev.top1 == {"fp32": pytest.approx(100 * top1_fp32, abs=1e-4),
                                            "int8": pytest.approx(100 * top1_int8, abs=1e-4)}
    assert ev.agreement == {"int8": pytest.approx(100 * agree, abs=1e-4)} and ev.notes == []


def test_fp16_keeps_float32_io_and_matches_fp32_in_the_reference_evaluator(env, tmp_path):
    out = tmp_path / "fp16.onnx"
    precision.convert_fp16(env.fp32, out)
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)          # incl. topological order
    io = [*model.graph.input, *model.graph.output]
    assert [v.type.tensor_type.elem_type for v in io] == [onnx.TensorProto.FLOAT] * 2
    floats = Counter(t.data_type for t in model.graph.initializer
                     if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16))
    assert floats[onnx.TensorProto.FLOAT16] >= 20 and floats[onnx.TensorProto.FLOAT] == 0
    assert Counter(n.op_type for n in model.graph.node)["Cast"] == 2      # at the edges only
    # float16 arithmetic (onnx's reference evaluator) against fp32 (onnxruntime), test images
    x = env.x[:16]
    got = ReferenceEvaluator(model).run(None, {model.graph.input[0].name: x})[0]
    ref = env.ref[:16]
    scale = max(1.0, float(np.abs(ref).max()))
    assert got.dtype == np.float32 and 0 < np.abs(got - ref).max() <= FP16_TOLERANCE * scale
    assert (got.argmax(1) == ref.argmax(1)).all()
    # the library's check says the same, and refuses past a tolerance float16 cannot meet
    inputs = precision.check_inputs((1, 16, 16), (1, 4), env.data)
    assert [len(a) for a in inputs] == [1, 4] and np.array_equal(inputs[1], env.x[1:5])
    diff = precision.compare_to_fp32(out, env.fp32, "fp16", inputs, tolerance=FP16_TOLERANCE)
    assert 0 < diff <= FP16_TOLERANCE * scale
    with pytest.raises(mcgraph.McGraphError, match="fp16: fp16.onnx differs from fp32 at batch 1"):
        precision.compare_to_fp32(out, env.fp32, "fp16", inputs, tolerance=1e-7)


def test_fp16_top1_is_measured_only_where_onnxruntime_computes_float16(env, tmp_path):
    out = tmp_path / "fp16.onnx"
    precision.convert_fp16(env.fp32, out)
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert precision.runs_natively("fp16") is cuda and precision.runs_natively("int8")
    ev = precision.top1_on_test_split({"fp32": env.fp32, "fp16": out}, env.data, images=32)
    assert ev.images == 32 and ev.top1["fp32"] == pytest.approx(
        100 * (env.ref[:32].argmax(1) == env.y[:32]).mean(), abs=1e-4)
    if not cuda:
        assert set(ev.top1) == {"fp32"} and len(ev.notes) == 1 and "fp16 top-1 not measured" \
            in ev.notes[0]


def _marked_data():
    """Training image i is filled with the value i (0..99); every test image with 255."""
    train = TensorImageDataset(torch.arange(100, dtype=torch.uint8).view(-1, 1, 1, 1)
                               .expand(100, 1, 4, 4).contiguous(), torch.arange(100) % 10)
    test = TensorImageDataset(torch.full((20, 1, 4, 4), 255, dtype=torch.uint8),
                              torch.arange(20) % 10)
    spec = DataSpec("marked", 10, 1, (4, 4), (0.5,), (0.25,), 100, 20, False, 0)
    return Data(spec, train, test)


def _pixel_values(reader):
    """The uint8 value of each calibration image, undoing the loader's normalization."""
    batches = []
    while (b := reader.get_next()) is not None:
        batches.append(b["input"])
    x = np.concatenate(batches)
    values = np.round((x * 0.25 + 0.5) * 255).astype(int)
    assert (values == values[:, :1, :1, :1]).all()           # constant images stay constant
    return [len(b) for b in batches], values[:, 0, 0, 0].tolist()


def test_calibration_draws_a_seeded_subset_of_the_training_split_only(env, monkeypatch):
    data = _marked_data()
    reader = precision.TrainSplitReader(data, "input", images=40, seed=3, batch_size=16)
    sizes, values = _pixel_values(reader)
    assert reader.split == "train" and reader.images == 40 and sizes == [16, 16, 8]
    assert all(v < 100 for v in values)                      # no test image (255) among them
    assert len(set(values)) == 40 and values != sorted(values)   # a random subset, no repeats
    reader.rewind()
    assert _pixel_values(reader)[1] == values                # the same batches again
    again = precision.TrainSplitReader(data, "input", images=40, seed=3, batch_size=16)
    other = precision.TrainSplitReader(data, "input", images=40, seed=4, batch_size=16)
    assert _pixel_values(again)[1] == values and set(_pixel_values(other)[1]) != set(values)
    # more images asked for than the split holds: all of them, once
    everything = precision.TrainSplitReader(data, "input", images=1000)
    assert everything.images == 100 and sorted(_pixel_values(everything)[1]) == list(range(100))
    # quantize_int8 itself reads through the loader from the training split, and nothing else
    splits = []

    def spy(data, split, *args, **kw):
        splits.append(split)
        return make_loader(data, split, *args, **kw)
    monkeypatch.setattr(precision, "make_loader", spy)
    info = precision.quantize_int8(env.fp32, env.fp32.with_name("spy.onnx"), env.data, images=64)
    assert splits == ["train"] and info["calib_images"] == 64


def test_int8_without_data_is_a_clear_error():
    with pytest.raises(mcgraph.McGraphError) as e:
        CompileConfig(checkpoint="m.pt", out="m.onnx", precision="int8")
    assert e.value.option == ("precision", "data")
    assert cli_message(e.value) == ("compile: --precision int8 needs --data: its calibration "
                                    "images come from that data set's training split")
    CompileConfig(checkpoint="m.pt", out="m.onnx", precision="fp16")        # fp16 needs none
    with pytest.raises(mcgraph.McGraphError, match="precision must be one of fp32, fp16, int8"):
        CompileConfig(checkpoint="m.pt", out="m.onnx", precision="int4")
    with pytest.raises(mcgraph.McGraphError, match="calib_images must be >= 1"):
        CompileConfig(checkpoint="m.pt", out="m.onnx", precision="int8", data="synthetic",
                      calib_images=0)
    with pytest.raises(mcgraph.McGraphError, match=r"expects inputs \[1, 28, 28\], data set "
                                                   r"synthetic has \[1, 16, 16\]"):
        precision.load_matching_data("synthetic", None, [1, 28, 28])
