"""Size targets (mcgraph.target): the cost model equals the compiled ONNX graph's MACs; the chain
chosen for a target lands within it; a tiny run with a target lands within tolerance."""
import pytest
import torch
from helpers import train_config

import mcgraph
from mcgraph import McGraphError, target
from mcgraph.masks import mask_modules
from mcgraph.onnx_stats import onnx_macs
from mcgraph.train.loop import train


def _model(seed=0, init="random", size=16):
    return mcgraph.rewrite("resnet20", 1, init, num_classes=10, in_channels=1,
                           input_size=(size, size), seed=seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cost_model_equals_the_compiled_onnx_macs(seed, tmp_path):
    gm = mcgraph.freeze_masks(_model(seed))
    c = target.costs(gm)
    slim, _ = mcgraph.compile(gm)
    path = mcgraph.export_onnx(slim, tmp_path / "m.onnx", (1, 16, 16))
    assert target.chain_macs(c, target.chain_of(gm)) == onnx_macs(path)
    full, _ = mcgraph.compile(_model(init="prev"))
    assert c.original == onnx_macs(mcgraph.export_onnx(full, tmp_path / "o.onnx", (1, 16, 16)))


@pytest.mark.parametrize("frac", [0.3, 0.5, 0.8])
def test_the_chosen_chain_is_within_the_target_and_the_likeliest(frac):
    gm = _model(3)
    chain = target.freeze_to_target(gm, macs=frac)
    got = target.fraction(gm)
    assert abs(got - frac) <= target.TOLERANCE * frac, (got, frac)
    assert target.chain_of(gm) == chain


def test_a_block_target_and_the_preferred_inputs():
    gm = _model(4)
    m = {m.target: m for m in mask_modules(gm)}["layer3.2"]
    with torch.no_grad():                        # layer3.2 strongly prefers layer3.1
        m.mask.fill_(0.01)
        m.mask[m.candidates.index("layer3.1")] = 1.0
    chain = target.freeze_to_target(gm, blocks=4)
    assert len(target.chain_of(gm)) == 4 and chain["layer3.2"] == "layer3.1"


def test_targets_that_cannot_apply_are_one_line_errors():
    with pytest.raises(McGraphError, match="K=1"):
        target.costs(mcgraph.rewrite("resnet20", 2, "random", in_channels=1, input_size=(16, 16)))
    with pytest.raises(McGraphError, match="branch"):
        target.costs(mcgraph.rewrite("resnext29_2x8d", 1, "random", in_channels=1,
                                     input_size=(16, 16)))
    with pytest.raises(McGraphError, match="smallest costs"):
        target.best_chain(_model(), macs=0.01)


def test_a_tiny_run_with_a_target_lands_within_it(tmp_path, synthetic):
    res = train(train_config(tmp_path, epochs=1, fan_in=1, target_macs=0.5, why_batches=0,
                             freeze_at=0.5), data=synthetic)
    t = res.metrics[-1]["freeze"]["target"]
    assert abs(t["macs_fraction"] - 0.5) <= 0.05 * 0.5 and t["macs"] == 0.5
    gm = mcgraph.load(tmp_path / "run" / "best.pt")
    assert abs(target.fraction(gm) - 0.5) <= 0.025
