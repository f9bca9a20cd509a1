"""The ONNX file carries its contract: metadata_props written at export, read back typed.

What is checked is recomputed here (the rewrite record, the wiring K=1 'prev' gives, the
loader's normalization), not taken from the exporter."""
import dataclasses
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest

import mcgraph
from mcgraph import McGraphError, graph_meta, precision
from mcgraph.config import CompileConfig
from mcgraph.datainfo import FASHION_MNIST, DataInfo, checkpoint_data
from mcgraph.evaluate import evaluate_path
from mcgraph.export import decode_metadata, encode_metadata, read_metadata
from mcgraph.jobs import compile_checkpoint
from mcgraph.train.config import TrainConfig
from mcgraph.train.data import FASHION_MNIST_DIR, load_data

BLOCKS = [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(3)]   # resnet20's residual blocks
DATA_KEYS = {"dataset", "normalization", "mean", "std", "class_names"}
NAMES = tuple(f"class {i}" for i in range(10))


@pytest.fixture(scope="module")
def prev(tmp_path_factory):
    """A compiled K=1 'prev' resnet20 (the original wiring: each block reads the one before)."""
    gm = mcgraph.rewrite("resnet20", 1, "prev", num_classes=10, in_channels=1, input_size=(16, 16))
    slim, report = mcgraph.compile(gm)
    return gm, slim, tuple(report.input_shape), tmp_path_factory.mktemp("meta")


def test_metadata_round_trips(prev):
    gm, slim, shape, d = prev
    info = DataInfo(name="my-data", num_classes=10, in_channels=1, input_size=(16, 16),
                    mean=(0.25,), std=(0.5,), class_names=NAMES)
    path = mcgraph.export_onnx(slim, d / "m.onnx", shape, data=info)
    chain = dict(zip(BLOCKS, [["relu"]] + [[b] for b in BLOCKS[:-1]]))
    rewrite = {**graph_meta.rewrite_record(gm), "input_shape": [1, 16, 16]}
    expected = {
        "version": mcgraph.__version__, "input_layout": "NCHW", "input_channels": 1,
        "input_size": [16, 16], "num_classes": 10, "dataset": "my-data",
        "normalization": "(pixel / 255 - mean) / std", "mean": [0.25], "std": [0.5],
        "class_names": list(NAMES), "rewrite": rewrite,
        "wiring": {"level": "module", "reads": {**chain, "head": ["layer3.2"]}, "removed": []}}
    got = read_metadata(path)
    assert got == expected
    # the strings in the file are what encoding the typed values gives, and only mcgraph's
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props == encode_metadata(got) and all(k.startswith("mcgraph.") for k in props)
    # a fresh onnxruntime session reads the same
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert decode_metadata(sess.get_modelmeta().custom_metadata_map) == expected
    # the fp16 copy a compile writes keeps the contract
    precision.convert_fp16(path, d / "m16.onnx")
    assert read_metadata(d / "m16.onnx") == expected


def test_without_data_nothing_about_data_is_written(prev, tmp_path):
    _, slim, shape, _ = prev
    path = mcgraph.export_onnx(slim, tmp_path / "a.onnx", shape)
    assert DATA_KEYS.isdisjoint(read_metadata(path))
    plain = mcgraph.create_model("resnet20", in_channels=1).eval()      # not rewritten by mcgraph
    got = read_metadata(mcgraph.export_onnx(plain, tmp_path / "b.onnx", (1, 16, 16)))
    assert got == {"version": mcgraph.__version__, "input_layout": "NCHW", "input_channels": 1,
                   "input_size": [16, 16], "num_classes": 10}


def test_data_that_does_not_fit_the_model_is_refused(prev, tmp_path):
    _, slim, shape, _ = prev
    with pytest.raises(McGraphError, match=r"^export_onnx: the model has 10 classes, data set "
                                           r"three has 3$"):
        mcgraph.export_onnx(slim, tmp_path / "m.onnx", shape, data=DataInfo("three", 3))
    with pytest.raises(McGraphError, match=r"expects inputs \[1, 16, 16\], data set rgb has "
                                           r"\[3, 16, 16\]"):
        mcgraph.export_onnx(slim, tmp_path / "m.onnx", shape,
                            data=DataInfo("rgb", 10, 3, (16, 16)))
    assert not list(tmp_path.iterdir())


def test_a_corrupt_value_is_one_line(prev, tmp_path):
    _, slim, shape, _ = prev
    path = mcgraph.export_onnx(slim, tmp_path / "m.onnx", shape)
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"mcgraph.input_size": "[16, 16", "other.key": "x"})
    onnx.save(model, str(path))
    with pytest.raises(McGraphError, match=r"m.onnx: mcgraph.input_size is not a valid list"):
        read_metadata(path)


def _trained(out: Path, data: str, **kw) -> Path:
    from mcgraph.train.loop import train
    train(TrainConfig(model="resnet20", data=data, epochs=1, max_train_samples=64,
                      max_test_samples=64, batch_size=32, progress=False, out=str(out), **kw))
    return out / "last.pt"


def test_trained_checkpoint_exports_its_normalization(tmp_path):
    ckpt = _trained(tmp_path / "run", "synthetic")
    out = tmp_path / "m.onnx"
    report = compile_checkpoint(CompileConfig(checkpoint=str(ckpt), out=str(out),
                                              data="synthetic", eval_images=64))
    spec = load_data("synthetic").spec                  # what the loader normalizes with
    meta = read_metadata(out)
    assert meta["dataset"] == "synthetic" and meta["num_classes"] == 10
    assert meta["mean"] == list(spec.mean) and meta["std"] == list(spec.std)
    assert meta["normalization"] == "(pixel / 255 - mean) / std"
    assert "class_names" not in meta                    # synthetic classes have no names
    assert set(meta["wiring"]["reads"]) | set(meta["wiring"]["removed"]) == {*BLOCKS, "head"}
    # the report's top-1 is in percent, as mcgraph eval counts it
    ev = evaluate_path(str(out), "synthetic", max_samples=64, device="cpu")
    assert report.top1 == {"fp32": pytest.approx(ev["acc"], abs=1e-4)} and ev["images"] == 64
    # the checkpoint alone (copied away from its run's config.json) says the same
    alone = tmp_path / "alone.pt"
    alone.write_bytes(ckpt.read_bytes())
    assert checkpoint_data(alone) == checkpoint_data(ckpt) == DataInfo.from_spec(spec)


def test_rewrite_checkpoint_exports_no_normalization(prev, tmp_path):
    gm, *_ = prev
    ckpt = mcgraph.save(gm, tmp_path / "m.pt")
    assert checkpoint_data(ckpt) is None
    compile_checkpoint(CompileConfig(checkpoint=str(ckpt), out=str(tmp_path / "m.onnx")))
    meta = read_metadata(tmp_path / "m.onnx")
    assert DATA_KEYS.isdisjoint(meta) and meta["rewrite"]["model"] == "resnet20"


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR).is_dir(), reason="no Fashion-MNIST files here")
def test_fashion_mnist_checkpoint_exports_class_names(tmp_path):
    ckpt = _trained(tmp_path / "run", "fashion-mnist", val_size=0)
    info = checkpoint_data(ckpt)
    spec = load_data("fashion-mnist").spec
    assert info == DataInfo(name="fashion-mnist", num_classes=10, in_channels=1,
                            input_size=(28, 28), mean=spec.mean, std=spec.std,
                            class_names=FASHION_MNIST)
    slim, report = mcgraph.compile(mcgraph.load(ckpt))
    meta = read_metadata(mcgraph.export_onnx(slim, tmp_path / "m.onnx", report.input_shape,
                                             data=info))
    assert meta["class_names"][0] == "T-shirt/top" and meta["class_names"][9] == "Ankle boot"
    assert meta["mean"] == [0.2860] and meta["std"] == [0.3530]


def test_imagefolder_class_names_are_its_folders(tmp_path):
    for split in ("train", "val"):
        for c in ("cat", "ant", "bee"):
            (tmp_path / split / c).mkdir(parents=True)
    (tmp_path / "train" / "notes.txt").write_text("not a class")
    spec = dataclasses.replace(load_data("synthetic").spec, name=f"imagefolder:{tmp_path}",
                               num_classes=3)
    assert DataInfo.from_spec(spec).class_names == ("ant", "bee", "cat")   # ImageFolder's order


def test_compile_and_bench_count_the_same_parameters(tmp_path):
    """One parameter count: bench shows the learned weights compile reported (from the file's
    metadata), not the ONNX initializers (BatchNorm statistics, adapter constants)."""
    from mcgraph.bench import BenchConfig, benchmark
    from mcgraph.config import CompileConfig
    from mcgraph.jobs import compile_checkpoint
    ck = tmp_path / "m.pt"
    mcgraph.save(mcgraph.rewrite("resnet20", 1, "random", num_classes=10, in_channels=1,
                                 input_size=(16, 16)), ck)
    rep = compile_checkpoint(CompileConfig(checkpoint=str(ck), out=str(tmp_path / "m.onnx")))
    [entry] = benchmark(BenchConfig(models=(str(tmp_path / "m.onnx"),), batch_sizes=(1,),
                                    repeats=1, warmup=0))
    assert entry["params"] == rep.params_after and entry["params_counted"] == "mcgraph"
    assert read_metadata(tmp_path / "m.onnx")["params"] == rep.params_after
