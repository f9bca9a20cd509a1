import pytest
import torch
from helpers import assert_same_outputs, eval_outputs, rand

import mcgraph
from mcgraph import McGraphError


def test_round_trip_with_weights_only(tmp_path, masked_resnet20):
    gm = masked_resnet20(fan_in=2, init="random", seed=2)
    with torch.no_grad():
        for p in gm.parameters():
            p.add_(0.01)
    mcgraph.freeze_masks(gm)
    path = mcgraph.save(gm, tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)               # plain data, no pickled module
    assert raw["format"] == "mcgraph" and raw["description"]["model"] == "resnet20"
    assert raw["description"]["masks"]["layer3.2"]["frozen"] is True
    back = mcgraph.load(path)
    x = rand(2, 1, 16, 16)
    assert_same_outputs(eval_outputs(gm, x), eval_outputs(back, x), rel=0)
    assert all(not m.mask.requires_grad
               for m in back.modules() if isinstance(m, mcgraph.MaskConnect))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp file left behind


def test_user_model_needs_model_argument(tmp_path):
    model = mcgraph.create_model("resnet20")
    gm = mcgraph.rewrite(model, fan_in=1)
    mcgraph.save(gm, tmp_path / "u.pt")
    with pytest.raises(McGraphError, match="pass model="):
        mcgraph.load(tmp_path / "u.pt")
    back = mcgraph.load(tmp_path / "u.pt", model=model)
    x = rand(1, 3, 32, 32)
    assert_same_outputs(eval_outputs(gm, x), eval_outputs(back, x), rel=0)


@pytest.mark.parametrize("content", [b"", b"garbage" * 10])
def test_corrupt_and_foreign_files(tmp_path, content):
    p = tmp_path / "bad.pt"
    p.write_bytes(content)
    with pytest.raises(McGraphError, match="not an mcgraph checkpoint"):
        mcgraph.load(p)
    torch.save({"weights": torch.zeros(2)}, p)
    with pytest.raises(McGraphError, match="no mcgraph header"):
        mcgraph.load(p)


def test_truncated_checkpoint(tmp_path, masked_resnet20):
    path = mcgraph.save(masked_resnet20(), tmp_path / "m.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(McGraphError, match="not an mcgraph checkpoint"):
        mcgraph.load(path)


def _as_version_1(path):
    raw = torch.load(path, weights_only=True)
    raw["version"] = 1
    torch.save(raw, path)


def test_version_1_loads_where_its_adapters_are_unchanged(tmp_path):
    gm = mcgraph.rewrite("resnet20", fan_in=2, init="random", in_channels=1, input_size=(28, 28))
    path = mcgraph.save(gm, tmp_path / "v1.pt")
    _as_version_1(path)                       # 28 -> 14 -> 7: both rules give the same strides
    back = mcgraph.load(path)
    x = rand(2, 1, 28, 28)
    assert_same_outputs(eval_outputs(gm, x), eval_outputs(back, x), rel=0)


def test_version_1_with_a_changed_adapter_is_refused(tmp_path):
    # resnet18 at 40x40: layer4.1 reads 2x2; from the 10x10 stem output the old rule took
    # stride 5 (pixels 0, 5), this version the network's own 8 (pixels 0, 8)
    gm = mcgraph.rewrite("resnet18", fan_in=2, init="random", input_size=(40, 40))
    path = mcgraph.save(gm, tmp_path / "v1.pt")
    assert torch.load(path, weights_only=True)["version"] == 2
    _as_version_1(path)
    with pytest.raises(McGraphError, match=r"load: .*v1.pt is checkpoint version 1, whose adapter "
                                           r"maxpool -> layer4.1 subsampled by \[5, 5\]; this "
                                           r"version subsamples by \[8, 8\]"):
        mcgraph.load(path)


def test_saving_a_compiled_model_is_refused_in_one_line(tmp_path, masked_resnet20):
    slim, _ = mcgraph.compile(masked_resnet20(fan_in=1))
    with pytest.raises(McGraphError) as e:
        mcgraph.save(slim, tmp_path / "slim.pt")
    assert str(e.value) == ("save: the model has no masks (it was compiled); save the masked "
                            "model, or export the compiled one with export_onnx")
    assert not list(tmp_path.iterdir())                      # nothing written
