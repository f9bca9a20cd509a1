"""BatchNorm re-estimation for the eval wiring while masks learn."""
import torch
from helpers import rand

import mcgraph
from mcgraph.masks import mask_modules
from mcgraph.train.metrics import recalibrate_bn


def _bn_state(m):
    return {k: v.clone() for k, v in m.state_dict().items() if "running" in k or "num_batches" in k}


def test_recalibrated_copy_uses_the_statistics_of_the_eval_wiring():
    gm = mcgraph.rewrite("resnext29_2x8d", fan_in=1, init="random", seed=1, input_size=(16, 16))
    gm.train()
    with torch.no_grad():
        for s in range(3):                       # running stats of three sampled wirings
            gm(rand(8, 3, 16, 16, seed=s))
    before, steps = _bn_state(gm), [int(m.step) for m in mask_modules(gm)]
    x = rand(32, 3, 16, 16, seed=7)
    # reference: top-K wiring (masks in eval) with batch statistics (BN in train mode)
    gm.eval()
    for m in gm.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.train()
    with torch.no_grad():
        ref = gm(x)
    gm.load_state_dict({**gm.state_dict(), **before})        # undo the reference's BN update
    cal = recalibrate_bn(gm, [(x, None)])
    with torch.no_grad():
        got = cal(x)
        stale = gm.eval()(x)
    err = float((got - ref).abs().max()) / float(ref.abs().max())
    assert err < 2e-2, err                       # unbiased running var vs biased batch var only
    assert float((stale - ref).abs().max()) / float(ref.abs().max()) > 10 * err   # it mattered
    assert all(torch.equal(before[k], v) for k, v in _bn_state(gm).items())     # original kept
    assert [int(m.step) for m in mask_modules(gm)] == steps                      # no draws
    assert not cal.training and all(not m.learning for m in mask_modules(cal))
