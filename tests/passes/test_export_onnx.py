"""ONNX under onnxruntime reproduces the compiled model; pruning shows in the ONNX graph."""
import onnx
import pytest
import torch
from helpers import adapter_weights, assert_same_outputs, eval_outputs, masked_resnet20, rand

import mcgraph
from mcgraph import McGraphError, deploy
from mcgraph.passes import export_onnx


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    gm = masked_resnet20(fan_in=1, init="random", seed=0)
    slim, rep = mcgraph.compile(gm)
    path = export_onnx(slim, d / "slim.onnx", (1, 16, 16))
    full, _ = mcgraph.compile(masked_resnet20(fan_in=1, init="prev"))
    full_path = export_onnx(full, d / "full.onnx", (1, 16, 16))
    return gm, slim, rep, path, full_path


@pytest.mark.parametrize("batch", [1, 4])
def test_onnxruntime_reproduces_compiled_and_frozen(compiled, batch):
    gm, slim, _, path, _ = compiled
    x = rand(batch, 1, 16, 16, seed=batch)
    got = deploy.run(deploy.make_session(path), x)
    assert_same_outputs(eval_outputs(slim, x), got)
    frozen = mcgraph.freeze_masks(gm).eval()
    assert_same_outputs(eval_outputs(frozen, x), got)


def test_file_is_plain_checked_and_dynamic(compiled):
    _, _, _, path, _ = compiled
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert deploy.opset(path) >= 18
    assert not list(path.parent.glob("*.data"))                # one file, no external data
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value               # dynamic batch axis
    ops = deploy.op_counts(path)
    assert "Mul" not in ops                                    # no multiply by 0/1 left


def test_pruning_shows_in_onnx(compiled):
    _, slim, rep, path, full_path = compiled
    assert rep.removed
    assert deploy.op_counts(path)["Conv"] < deploy.op_counts(full_path)["Conv"] == 19
    # BatchNorm may be folded into the convolutions, so the file may hold fewer numbers
    assert deploy.initializer_params(path) - adapter_weights(path) <= rep.params_after
    assert deploy.initializer_params(path) < deploy.initializer_params(full_path)


def test_refuses_masked_models_and_missing_dirs(tmp_path):
    gm = mcgraph.rewrite("resnet20", fan_in=1, input_size=(16, 16))
    with pytest.raises(McGraphError, match="still has masks"):
        export_onnx(gm, tmp_path / "m.onnx", (3, 16, 16))
    with pytest.raises(McGraphError, match="does not exist"):
        export_onnx(gm, tmp_path / "nope" / "m.onnx", (3, 16, 16))


class _RaisesInForward(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)

    def forward(self, x):
        raise RuntimeError("boom: this model cannot be traced")


class _NoOnnxFunction(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)

    def forward(self, x):
        y = self.conv(x)[..., :2, :2]
        return torch.linalg.eigvals(y).real.flatten(1)      # aten.linalg_eig has no ONNX function


@pytest.mark.parametrize("model,reason", [
    (_RaisesInForward(), r"_RaisesInForward did not export \(torch\.export\): RuntimeError: "
                         r"boom: this model cannot be traced$"),
    (_NoOnnxFunction(), r"_NoOnnxFunction did not export \(conversion to ONNX\): DispatchError: "
                        r"No ONNX function found for .*linalg_eig"),
])
def test_a_failed_export_says_why_in_one_line(tmp_path, model, reason):
    with pytest.raises(McGraphError, match=r"^export_onnx: " + reason) as e:
        export_onnx(model, tmp_path / "m.onnx", (1, 8, 8))
    msg = str(e.value)
    assert "\n" not in msg and "\x1b" not in msg             # one line, no terminal colours
    assert not list(tmp_path.iterdir())                      # nothing left behind


def test_a_failed_export_with_an_uninformative_error_reads_the_exporter_log(tmp_path, monkeypatch):
    import sys

    def export(*a, **k):
        print("Exporting the model...", file=sys.stdout)
        print("W1130 torch/onnx: some warning\nonnxscript.errors.TranslationError: "
              "unsupported dtype complex64 in node 'eig'\n  more detail", file=sys.stderr)
        raise RuntimeError()                                  # no message of its own

    monkeypatch.setattr(torch.onnx, "export", export)
    with pytest.raises(McGraphError, match=r"^export_onnx: _RaisesInForward did not export: "
                                           r"onnxscript.errors.TranslationError: unsupported dtype "
                                           r"complex64 in node 'eig'$"):
        export_onnx(_RaisesInForward(), tmp_path / "m.onnx", (1, 8, 8))
