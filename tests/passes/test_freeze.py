import pytest
from helpers import assert_same_outputs, eval_outputs, rand

from mcgraph import McGraphError, create_model
from mcgraph.masks import mask_modules
from mcgraph.passes import freeze


def test_freeze_keeps_eval_outputs_and_fixes_training_wiring(masked_resnet20):
    gm = masked_resnet20(fan_in=2, init="random", seed=3)
    x = rand(4, 1, 16, 16)
    before = eval_outputs(gm, x)
    freeze(gm)
    assert all(bool(m.frozen) and not m.mask.requires_grad for m in mask_modules(gm))
    assert_same_outputs(before, eval_outputs(gm, x), rel=0)
    gm.train()
    wiring = [m.selected().tolist() for m in mask_modules(gm)]
    gm(x)
    assert wiring == [m.selected().tolist() for m in mask_modules(gm)]


def test_freeze_needs_masks():
    from mcgraph.tracing import trace
    with pytest.raises(McGraphError, match="freeze: .* has no masks"):
        freeze(trace(create_model("resnet20")))
