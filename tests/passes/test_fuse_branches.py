"""fuse_branches: streams as channels, BatchNorms and the K-hot mix folded into convolutions."""
import copy

import pytest
from helpers import assert_same_outputs, eval_outputs, rand
from onnx.reference import ReferenceEvaluator

import mcgraph
from mcgraph import McGraphError, deploy
from mcgraph.passes import freeze, fuse_branches
from mcgraph.passes.fuse_branches import FusedBranchBlock


# fan_in 4 = C: every branch live
@pytest.mark.parametrize("fan_in", [1, pytest.param(2, marks=pytest.mark.slow), 4])
def test_fused_graph_equals_frozen_model(tmp_path, fan_in):
    gm = mcgraph.rewrite("resnext29_4x16d", fan_in=fan_in, init="random", seed=3, input_size=(8, 8))
    frozen = freeze(gm).eval()
    plain, _ = mcgraph.compile(frozen, optimize=False)
    fast, rep = mcgraph.compile(frozen)
    if fan_in == 4:       # K = C: every row reads every branch, the original network on one stream
        assert [p["name"] for p in rep.passes] == ["freeze", "collapse_streams"]
    else:
        assert [p["name"] for p in rep.passes] == ["freeze", "prune_branches", "fuse_branches"]
        assert all(isinstance(fast.get_submodule(b), FusedBranchBlock)
                   for b in ("layer1.0", "layer2.0", "layer3.2"))
    x = rand(2, 3, 8, 8, seed=fan_in)
    ref = eval_outputs(frozen, x)
    assert_same_outputs(ref, eval_outputs(fast, x), rel=1e-5)
    path = mcgraph.export_onnx(fast, tmp_path / "fast.onnx", (3, 8, 8))
    assert_same_outputs(ref, deploy.run(deploy.make_session(path), x))
    assert_same_outputs(ref, ReferenceEvaluator(str(path)).run(None, {"input": x.numpy()})[0])
    ops = deploy.op_counts(path)
    plain_ops = deploy.op_counts(mcgraph.export_onnx(plain, tmp_path / "plain.onnx", (3, 8, 8)))
    assert "BatchNormalization" not in ops and "Einsum" not in ops
    assert plain_ops.get("BatchNormalization", 0) > 0 or fan_in == 4
    # streams stay 4-D between blocks: the only Reshapes are the head's (stream mean, flatten)
    assert ops.get("Reshape", 0) <= 2
    assert fan_in == 4 or plain_ops.get("Reshape", 0) > 2     # one stream: none to remove
    assert ops["Conv"] == plain_ops["Conv"]
    # the parameters the report counts are the pruned model's, before BatchNorms fold
    assert rep.params_after == mcgraph.count_params(plain)


def test_requires_pruned_blocks():
    gm = mcgraph.rewrite("resnext29_4x16d", fan_in=1, init="random", seed=3, input_size=(16, 16))
    with pytest.raises(McGraphError, match=r"^fuse_branches: .*not pruned"):
        fuse_branches(copy.deepcopy(freeze(gm)))
