"""Evaluation is never silently wrong: a model that does not fit the data set is refused in one
line, another normalization is said in one line, and every path counts top-1 by one rule
(the first index of the largest logit) and reports percent."""
import json

import numpy as np
import onnx
import pytest
import torch
from helpers import assert_one_line_error, run_cli, run_cli_ok
from torch import nn

import mcgraph
from mcgraph import precision
from mcgraph.accuracy import count_correct
from mcgraph.datainfo import DataInfo
from mcgraph.evaluate import evaluate_path
from mcgraph.train.data import load_data, make_loader
from mcgraph.train.metrics import evaluate


@pytest.fixture(scope="module")
def folder3(tmp_path_factory):
    """An imagefolder data set of 3 classes (32x32 RGB PNGs, 2 train and 1 val image each)."""
    from PIL import Image
    root = tmp_path_factory.mktemp("folder3")
    rng = np.random.default_rng(0)
    for split, n in (("train", 2), ("val", 1)):
        for c in ("a", "b", "c"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")
    return root


def test_onnx_with_10_classes_on_a_3_class_folder_is_refused(folder3, tmp_path):
    path = mcgraph.export_onnx(mcgraph.create_model("resnet20").eval(), tmp_path / "m.onnx",
                               (3, 32, 32))
    r = run_cli("eval", path, "--data", f"imagefolder:{folder3}")
    assert_one_line_error(r, f"eval: {path} has 10 classes, data set imagefolder:{folder3} has 3")


def test_checkpoint_with_3_classes_on_10_class_data_is_refused(tmp_path):
    gm = mcgraph.rewrite("resnet20", 1, "prev", num_classes=3, in_channels=1, input_size=(16, 16))
    ckpt = mcgraph.save(gm, tmp_path / "m.pt")
    r = run_cli("eval", ckpt, "--data", "synthetic")
    assert_one_line_error(r, f"eval: {ckpt} has 3 classes, data set synthetic has 10")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A compiled 1x16x16 10-class resnet20 (fits the synthetic set)."""
    gm = mcgraph.rewrite("resnet20", 1, "prev", num_classes=10, in_channels=1, input_size=(16, 16))
    slim, _ = mcgraph.compile(gm)
    return slim, tmp_path_factory.mktemp("small")


def test_onnx_whose_metadata_names_another_input_size_is_refused(small):
    slim, d = small
    path = mcgraph.export_onnx(slim, d / "size.onnx", (1, 16, 16))
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"mcgraph.input_size": "[28,28]",
                                        "mcgraph.input_channels": "1"})
    onnx.save(model, str(path))
    assert_one_line_error(run_cli("eval", path, "--data", "synthetic"),
                          "was exported for inputs [1, 28, 28], synthetic has [1, 16, 16]")


def test_another_normalization_is_one_warning_line(small):
    slim, d = small
    info = DataInfo("elsewhere", 10, 1, (16, 16), mean=(0.5,), std=(0.25,))
    path = mcgraph.export_onnx(slim, d / "norm.onnx", (1, 16, 16), data=info)
    r = run_cli_ok("eval", path, "--data", "synthetic", "--max-samples", 32, "--json")
    res = json.loads(r.stdout)
    [line] = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert line.startswith("warning: ") and "normalized with mean [0.5] std [0.25]" in line
    assert res["warnings"] == [line.removeprefix("warning: ")] and res["images"] == 32
    # the data set the model was trained on: nothing to say
    same = DataInfo.from_spec(load_data("synthetic").spec)
    path = mcgraph.export_onnx(slim, d / "same.onnx", (1, 16, 16), data=same)
    r = run_cli_ok("eval", path, "--data", "synthetic", "--max-samples", 32)
    assert r.stderr == "" and "warnings" not in r.stdout


def test_count_correct_breaks_ties_by_the_first_index():
    logits = torch.tensor([[1., 3., 3., 0.], [2., 2., 2., 2.], [0., 1., 1., 1.]])
    labels = torch.tensor([2, 0, 3])
    # top-1: the first of the tied maxima (1, 0, 1); top-2: label 2 comes second in row 0,
    # label 3 third in row 2 (classes 1 and 2 tie with it and come first)
    assert count_correct(logits, labels, k=2) == (1, 2, 3)
    assert count_correct(logits.numpy(), labels.numpy(), k=2) == (1, 2, 3)
    assert (np.argmax(logits.numpy(), axis=1) == [1, 0, 1]).all()
    assert (torch.argmax(logits, dim=1) == torch.tensor([1, 0, 1])).all()


class _Tied(nn.Module):
    """Logits with many ties, computed exactly (no sum whose rounding could differ between
    PyTorch and onnxruntime): ten input pixels, doubled and rounded to integers."""

    def forward(self, x):
        return torch.round(x.flatten(1)[:, :10] * 2)


def test_top1_rule_is_identical_across_the_three_paths(tmp_path):
    data = load_data("synthetic")
    path = mcgraph.export_onnx(_Tied(), tmp_path / "tied.onnx", (1, 16, 16))
    x, y = next(iter(make_loader(data, "test", 256, shuffle=False, augment=False)))
    logits = _Tied()(x).numpy()
    top = logits.max(axis=1, keepdims=True)
    assert ((logits == top).sum(axis=1) > 1).mean() > 0.3          # ties are common
    first = 100.0 * (logits.argmax(axis=1) == y.numpy()).mean()
    last = 100.0 * ((9 - logits[:, ::-1].argmax(axis=1)) == y.numpy()).mean()
    assert first != last                                # the tie rule changes the number
    trainer = evaluate(_Tied(), make_loader(data, "test", 100, shuffle=False, augment=False),
                       10)["acc"]
    ev = evaluate_path(str(path), "synthetic", batch_size=100, device="cpu")
    compiled = precision.top1_on_test_split({"fp32": path}, data, batch_size=100).top1["fp32"]
    assert trainer == pytest.approx(first) and ev["acc"] == pytest.approx(first)
    assert compiled == pytest.approx(first, abs=1e-4) and ev["images"] == 256
