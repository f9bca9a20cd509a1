import pytest
import torch

import mcgraph
from helpers import assert_same_outputs, eval_outputs, rand
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
    assert all(not m.mask.requires_grad for m in back.modules() if isinstance(m, mcgraph.MaskConnect))
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
