"""discover_blocks + the structural search: the zoo's blocks are found by structure, with reasons;
K=1 'prev' equals the original; a random K=2 compile exports ONNX equal to the frozen model."""
import pytest
import torch
from helpers import assert_same_outputs, eval_outputs, rand
from zoo import ZOO, NoResidual, SideNet

import mcgraph
from mcgraph import McGraphError, graph_meta
from mcgraph.passes import DiscoverBlocks, run_passes
from mcgraph.tracing import annotate_shapes, trace

SHAPE = (3, 16, 16)


def _discover(model):
    gm = annotate_shapes(trace(model), rand(1, *SHAPE))
    code = gm.code
    run_passes(gm, [DiscoverBlocks()])
    assert gm.code == code                                   # an analysis pass
    disc = graph_meta.discovery(gm)
    return disc["blocks"], {v.module: v.reason for v in disc["verdicts"]}


@pytest.mark.parametrize("style", sorted(ZOO))
def test_zoo_blocks_found_by_structure(style):
    model, expected = ZOO[style]()
    blocks, why = _discover(model)
    assert blocks == expected
    assert all(why[b].startswith("block: ") for b in blocks)


def test_zoo_reasons():
    _, why = _discover(ZOO["preact"]()[0])
    assert why["stage2.0"] == "block: F(x) + S(x) (pre-activation), S = conv2d"
    assert why["stage1.0"].endswith("S = identity")
    assert why["stage1"].startswith("chains residual blocks")
    _, why = _discover(ZOO["resnet_d"]()[0])
    assert why["layers.1"] == "block: silu(F(x) + S(x)), S = avgpool2d, conv2d, batchnorm2d"
    _, why = _discover(ZOO["nested"]()[0])
    assert why["body.1"] == "forwards to its only child body.1.blocks"
    _, why = _discover(ZOO["twice"]()[0])
    assert why["shared"] == "called 2 times; a block is called once"
    blocks, why = _discover(SideNet())
    assert blocks == ["a", "c"]
    assert why["aux"].startswith("not on the main path")
    assert why["b"].startswith("not on the main path")
    blocks, why = _discover(NoResidual())
    assert blocks == []
    assert why["features"] == "output comes from a conv2d, not from a sum F(x) + S(x)"
    assert why["features.2"] == "output is a mul of 2 paths, not a sum F(x) + S(x)"  # the SE gate


@pytest.mark.parametrize("style", sorted(ZOO))
def test_zoo_prev_k1_equals_the_original(style):
    torch.manual_seed(0)
    model, expected = ZOO[style]()
    model.eval()
    masked = mcgraph.rewrite(model, fan_in=1, init="prev", example_input=rand(1, *SHAPE))
    assert mcgraph.dag_of(masked).blocks() == expected
    x = rand(4, *SHAPE, seed=1)
    assert_same_outputs(eval_outputs(model, x), eval_outputs(masked, x), rel=1e-5)


@pytest.mark.parametrize("style", sorted(ZOO))
def test_zoo_random_k2_compiles_to_onnx_equal_to_the_frozen_model(style, tmp_path):
    from mcgraph.jobs import verify_onnx
    torch.manual_seed(0)
    model, _ = ZOO[style]()
    masked = mcgraph.rewrite(model, fan_in=2, init="random", seed=3, example_input=rand(1, *SHAPE))
    mcgraph.freeze(masked)
    slim, report = mcgraph.compile(masked)
    assert report.max_abs_diff <= 1e-4 * max(1.0, report.output_scale)
    path = mcgraph.export_onnx(slim, tmp_path / "m.onnx", tuple(report.input_shape))
    assert verify_onnx(masked, path) <= 1e-4 * max(1.0, report.output_scale)
    assert report.params_after <= report.params_before


def test_side_branch_network_is_refused_naming_the_split():
    with pytest.raises(McGraphError, match=r"find_modules: a output is read by b, aux; only the "
                                           r"next block may read it"):
        mcgraph.rewrite(SideNet(), 1, "prev", example_input=rand(1, *SHAPE))


def test_no_residual_refusal_is_one_line_with_the_nearest_candidates():
    with pytest.raises(McGraphError) as e:
        mcgraph.rewrite(NoResidual(), 1, "prev", example_input=rand(1, *SHAPE))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("find_modules: no residual blocks found in NoResidual")
    assert "nearest: features.2 (SE): output is a mul of 2 paths" in msg
    assert "hint: name the blocks with modules=/--modules" in msg


def test_modules_given_by_name_override_the_search():
    model, _ = ZOO["twice"]()
    masked = mcgraph.rewrite(model, 1, "prev", modules=["b"], example_input=rand(1, *SHAPE))
    assert mcgraph.dag_of(masked).blocks() == ["b"]
    assert graph_meta.discovery(masked) is None
