"""The files of tests/test_hostile.py: broken and hostile checkpoints, ONNX files, model
sources, experiment specs and data directories, each beside a good one."""
import gzip
import json
import pickle
import shutil
import textwrap

import onnx
import torch
from onnx import TensorProto, helper

import mcgraph
from mcgraph.masks import mask_modules


class Payload:
    """Unpickling this calls open(path, "w"): it creates a marker file. It must never run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _onnx_model(path, dims, op="GlobalAveragePool"):
    """A tiny ONNX model whose input has ``dims`` (ints or names)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    if op == "MatMul":
        w = helper.make_tensor("w", TensorProto.FLOAT, [dims[-1], 10], [0.0] * dims[-1] * 10)
        g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [w])
    else:
        g = helper.make_graph([helper.make_node(op, ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def _png(path, ok=True):
    path.parent.mkdir(parents=True, exist_ok=True)
    if ok:
        from PIL import Image
        Image.new("RGB", (4, 4), (10, 20, 30)).save(path)
    else:
        path.write_bytes(b"\x89PNG\r\n\x1a\n not really a picture")


MODEL_FILES = {
    "boom.py": "raise RuntimeError('boom at import')\n",
    "exits.py": "import sys\nsys.exit(3)\n",
    "syntax.py": "def make(:\n",
    "empty.py": "",
    "factory_raises.py": "def make():\n    raise ValueError('factory says no')\n",
    "factory_exits.py": "import sys\ndef make():\n    sys.exit(4)\n",
    "returns_int.py": "def make():\n    return 3\n",
    "forward_raises.py": textwrap.dedent("""
        from torch import nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4, 10)
            def forward(self, x):
                raise ValueError('forward says no')
        def make():
            return Net()
        """),
}


NET = textwrap.dedent('''
    from torch import nn
    from torchvision.models.resnet import BasicBlock
    def make(num_classes=10):
        return nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU(), BasicBlock(8, 8),
                             BasicBlock(8, 8), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(8, num_classes))
    ''')


def _spec(**table):
    t = {"name": "t", "models": ["resnet20"], "configs": [{"name": "c", "data": "synthetic",
                                                             "epochs": 1}], **table}
    return json.dumps({"tables": [t]})


SPECS = {
    "ok.json": _spec(),
    "top_key.json": json.dumps({"tables": json.loads(_spec())["tables"], "tabels": []}),
    "table_key.json": _spec(sedes=[0]),
    "config_key.json": _spec(configs=[{"name": "c", "data": "synthetic", "epoch": 1}]),
    "recipe_key.json": _spec(recipe={"learning_rate": 0.1}),
    "bad_seed.json": _spec(seeds=[-1]),
    "zero_epochs.json": _spec(configs=[{"name": "c", "data": "synthetic", "epochs": 0}]),
    "freeze.json": _spec(recipe={"freeze_at": 2.0}),
    "not_json.json": "{tables: [",
    "empty.json": "",
    "list.json": "[1, 2]",
    "unknown.toml": '[[tables]]\nname = "t"\nmodels = ["resnet20"]\ncolour = "red"\n'
                    '[[tables.configs]]\nname = "c"\n',
}


def make_files(d):
    """Write every hostile file into directory ``d`` (once per test module)."""
    (d / "adir").mkdir()
    (d / "dir.py").mkdir()
    (d / "notes.txt").write_text("hello\n")
    (d / "notes.onnx").write_text("hello\n")
    for name in ("empty.pt", "empty.onnx"):
        (d / name).write_bytes(b"")
    for name, text in {**MODEL_FILES, **SPECS}.items():
        (d / name).write_text(text)
    # checkpoints: a good one (1x16x16, the synthetic data's images), broken ones, hostile ones
    gm = mcgraph.rewrite("resnet20", 1, "random", in_channels=1, input_size=(16, 16))
    mcgraph.save(gm, d / "good.pt")
    mcgraph.save(mcgraph.rewrite("resnet32", 1, "random", in_channels=1, input_size=(16, 16)),
                 d / "r32.pt")
    raw = (d / "good.pt").read_bytes()
    (d / "trunc.pt").write_bytes(raw[:len(raw) // 2])
    ck = torch.load(d / "good.pt", weights_only=True)
    other = mcgraph.rewrite("resnet20", 1, "random", in_channels=1, num_classes=100,
                            input_size=(16, 16))
    torch.save({**ck, "state_dict": other.state_dict()}, d / "other.pt")
    torch.save({**ck, "version": 0}, d / "v0.pt")
    torch.save({**ck, "version": 99}, d / "v99.pt")
    torch.save(ck["state_dict"], d / "raw_sd.pt")
    desc = ck["description"]
    torch.save({**ck, "description": {**desc, "model": None}}, d / "user.pt")
    torch.save({**ck, "description": {k: v for k, v in desc.items() if k != "fan_in"}},
               d / "nokey.pt")
    torch.save({**ck, "description": {**desc, "input_shape": [-1, 16, 16]}}, d / "badshape.pt")
    torch.save({**ck, "description": {**desc, "model": "os:system"}}, d / "os_src.pt")
    # a checkpoint of a file source whose file has since changed to one that raises on import
    (d / "net.py").write_text(NET)
    mcgraph.save(mcgraph.rewrite(f"{d / 'net.py'}:make", 1, "prev", in_channels=1,
                                 input_size=(16, 16)), d / "src.pt")
    (d / "net.py").write_text(MODEL_FILES["boom.py"])
    evil = {**ck, "state_dict": {"conv1.weight": Payload(d / "PWNED")}}
    torch.save(evil, d / "evil.pt")
    # the payload is real: loaded without weights_only, it does create its marker
    torch.save({**evil, "state_dict": {"x": Payload(d / "proof")}}, d / "proof.pt")
    torch.load(d / "proof.pt", weights_only=False)
    assert (d / "proof").exists()
    # --weights: state_dicts for the original resnet20 (1 input channel)
    torch.save(mcgraph.create_model("resnet20", num_classes=100).state_dict(), d / "wrong_sd.pt")
    torch.save({"conv1.weight": Payload(d / "PWNED")}, d / "evil_sd.pt")
    torch.save([1, 2, 3], d / "list_sd.pt")
    # --resume: run directories whose last.pt is broken or hostile
    for name, src in (("trunc", "trunc.pt"), ("evil", "evil.pt"), ("notrain", "good.pt")):
        (d / f"resume_{name}").mkdir()
        shutil.copy(d / src, d / f"resume_{name}" / "last.pt")
    (d / "resume_badcfg").mkdir()
    torch.save({**ck, "train": {"config": ["not", "a", "dict"]}}, d / "resume_badcfg" / "last.pt")
    # ONNX: right input, wrong channels, wrong rank, unknown dims, truncated, a checkpoint
    mcgraph.export_onnx(mcgraph.create_model("resnet20", in_channels=1).eval(), d / "good.onnx",
                        (1, 16, 16))
    mcgraph.export_onnx(mcgraph.create_model("resnet20").eval(), d / "rgb.onnx", (3, 16, 16))
    _onnx_model(d / "rgb32.onnx", [1, 3, 32, 32])
    _onnx_model(d / "flat.onnx", ["N", 256], op="MatMul")
    _onnx_model(d / "dyn.onnx", ["N", "C", "H", "W"])
    raw = (d / "good.onnx").read_bytes()
    (d / "trunc.onnx").write_bytes(raw[:len(raw) // 2])
    shutil.copy(d / "good.pt", d / "ckpt.onnx")
    # data directories: ImageFolder layouts, Fashion-MNIST and CIFAR files
    (d / "if_noclass" / "train").mkdir(parents=True)
    (d / "if_noclass" / "val").mkdir()
    for split in ("train", "val"):
        _png(d / "if_ok" / split / "a" / "x.png")
        _png(d / "if_corrupt" / split / "a" / "x.png", ok=False)
    # 3 classes of 32x32 RGB images, and a 10-class model for that input
    for split in ("train", "val"):
        for cls in ("a", "b", "c"):
            _png(d / "if3" / split / cls / "x.png")
    mcgraph.export_onnx(mcgraph.create_model("resnet20").eval(), d / "r20_rgb32.onnx", (3, 32, 32))
    # wirings compile must refuse: untrained (every m~ equal), or masks that were still learning
    mcgraph.save(mcgraph.rewrite("resnet20", 1, "uniform", in_channels=1, input_size=(16, 16)),
                 d / "uniform.pt")
    learning = mcgraph.rewrite("resnet20", 1, "random", in_channels=1, input_size=(16, 16))
    for m in mask_modules(learning):
        m.step.fill_(2)                        # drew two wirings, never froze
    mcgraph.save(learning, d / "learning.pt")
    mcgraph.save(mcgraph.rewrite("resnet20", 2, "random", in_channels=1, input_size=(16, 16)),
                 d / "k2.pt")
    # a finished run's directory (a new run must not mix with it)
    (d / "run_done").mkdir()
    for name in ("config.json", "metrics.jsonl", "last.pt", "best.pt"):
        (d / "run_done" / name).write_text("{}\n")
    (d / "fm_trunc").mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (d / "fm_trunc" / f"{stem}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03")[:-6])
    cifar = d / "cifar_evil" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(cifar / name, "wb") as f:
            pickle.dump({b"data": Payload(d / "PWNED"), b"labels": [0]}, f, protocol=2)
    return d
