"""Models from anywhere on the command line: a user's file with --model-arg, torchvision:NAME, and
--trust-code, which a checkpoint naming a file source needs before inspect, compile, eval or a
resumed train run executes that file again."""
import json
import textwrap

import pytest
import torch
from helpers import (
    assert_one_line_error,
    assert_same_outputs,
    eval_outputs,
    ort_logits,
    rand,
    run_cli,
    run_cli_json,
    run_cli_ok,
)

import mcgraph

NET = textwrap.dedent('''
    from collections import OrderedDict

    from torch import nn
    from torchvision.models.resnet import BasicBlock

    def make(width=16, blocks=3, num_classes=10):
        """A small residual network whose blocks are torchvision's BasicBlock."""
        layers = [("conv", nn.Conv2d(3, width, 3, 1, 1, bias=False)), ("bn", nn.BatchNorm2d(width)),
                  ("relu", nn.ReLU())]
        layers += [(f"b{i}", BasicBlock(width, width)) for i in range(blocks)]
        layers += [("pool", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()),
                   ("fc", nn.Linear(width, num_classes))]
        return nn.Sequential(OrderedDict(layers))
''')


def assert_needs_trust(r, source):
    """Exit 2 through the CLI's error handling, one line on stderr naming the source and the
    flag."""
    assert_one_line_error(r, "--trust-code", source)


@pytest.fixture(scope="module")
def file_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("src")
    (d / "net.py").write_text(NET)
    r = run_cli_ok("rewrite", f"{d / 'net.py'}:make", "--model-arg", "width=8", "-k", "1",
                   "--init", "prev", "--input-size", "16x16", "-o", d / "m.pt", "--json")
    return d, json.loads(r.stdout)


def test_rewrite_a_file_with_model_args(file_ckpt):
    d, summary = file_ckpt
    source = f"{d / 'net.py'}:make"
    assert summary["model"] == source and summary["model_args"] == {"width": 8}
    assert (summary["num_classes"], summary["in_channels"]) == (10, 3)   # the factory's own
    assert summary["modules"] == 3 and summary["input_shape"] == [3, 16, 16]
    desc = torch.load(d / "m.pt", weights_only=True)["description"]
    assert desc["model"] == source and desc["model_args"] == {"width": 8}
    assert desc["model_kwargs"] == {"num_classes": 10, "in_channels": 3}
    gm = mcgraph.load(d / "m.pt", trust_code=True)
    assert gm.get_submodule("b0").conv1.in_channels == 8          # width=8 reached the factory


def test_inspect_and_compile_need_trust_code(file_ckpt, tmp_path):
    d, _ = file_ckpt
    source = f"{d / 'net.py'}:make"
    assert_needs_trust(run_cli("inspect", d / "m.pt"), source)
    assert_needs_trust(run_cli("compile", d / "m.pt", "-o", tmp_path / "m.onnx"), source)
    assert not (tmp_path / "m.onnx").exists()
    data = run_cli_json("inspect", d / "m.pt", "--trust-code")
    assert [m["module"] for m in data["modules"]] == ["b0", "b1", "b2"]
    assert [m["chosen"] for m in data["modules"]] == [["relu"], ["b0"], ["b1"]]   # prev: a chain
    run_cli_ok("compile", d / "m.pt", "--trust-code", "-o", tmp_path / "m.onnx")
    x = rand(2, 3, 16, 16)
    got = ort_logits(tmp_path / "m.onnx", x)
    ref = eval_outputs(mcgraph.load(d / "m.pt", trust_code=True), x)
    assert_same_outputs(ref, torch.from_numpy(got))


def test_model_arg_malformed_is_one_line(tmp_path):
    r = run_cli("rewrite", "resnet20", "--model-arg", "width", "-k", "1", "-o", tmp_path / "x.pt")
    assert_one_line_error(r, "--model-arg", "key=value")
    assert not (tmp_path / "x.pt").exists()
    r = run_cli("rewrite", f"{tmp_path / 'none.py'}:make", "-k", "1", "-o", tmp_path / "x.pt")
    assert assert_one_line_error(r) == f"error: model: {tmp_path / 'none.py'} does not exist"


def test_rewrite_torchvision_adapts_io(tmp_path):
    r = run_cli_ok("rewrite", "torchvision:resnet18", "--num-classes", "7", "--in-channels", "1",
                   "--input-size", "32x32", "-k", "1", "-o", tmp_path / "tv.pt", "--json")
    summary = json.loads(r.stdout)
    assert summary["model"] == "torchvision:resnet18" and summary["modules"] == 8
    gm = mcgraph.load(tmp_path / "tv.pt")                       # trusted: no flag
    assert gm(rand(2, 1, 32, 32)).shape == (2, 7)
    r = run_cli("rewrite", "torchvision:resnet19", "-k", "1", "-o", tmp_path / "x.pt")
    assert_one_line_error(r, "did you mean resnet18")


def test_train_eval_and_resume_a_file_source(tmp_path):
    (tmp_path / "net.py").write_text(NET)
    source, out = f"{tmp_path / 'net.py'}:make", tmp_path / "run"
    base = ("--data", "synthetic", "--epochs", "1", "--batch-size", "64", "--fan-in", "1",
            "--val-size", "0", "--no-progress", "--out", out)
    res = run_cli_json("train", source, "--model-arg", "width=4", *base, "--max-steps", "1")
    assert res["steps"] == 1 and res["stopped"] == "max_steps"
    desc = torch.load(out / "last.pt", weights_only=True)["description"]
    assert desc["model"] == source and desc["model_args"] == {"width": 4}
    assert desc["model_kwargs"] == {"num_classes": 10, "in_channels": 1}   # synthetic: 1x16x16
    # resuming from the checkpoint alone would run net.py again: refused without --trust-code
    assert_needs_trust(run_cli("train", out / "last.pt", *base, "--resume", "--max-steps", "2"),
                       source)
    assert_needs_trust(run_cli("eval", out / "last.pt", "--data", "synthetic"), source)
    # naming the source itself again is trusting it
    res = run_cli_json("train", source, *base, "--resume", "--max-steps", "2")
    assert res["steps"] == 2
    ev = run_cli_json("eval", out / "last.pt", "--data", "synthetic", "--trust-code",
                      "--max-samples", "64")
    assert ev["images"] == 64 and 0 <= ev["acc"] <= 100
