"""conv_adapters: each adapted tensor once, as a 1x1 convolution; the mean's 1/K as one too."""
import copy

import onnx
import pytest
from helpers import adapter_convs, assert_same_outputs, eval_outputs, rand
from onnx.reference import ReferenceEvaluator

import mcgraph
from mcgraph import McGraphError, deploy
from mcgraph.ir import dag_of
from mcgraph.masks import mask_modules
from mcgraph.passes import conv_adapters, freeze


def _expected_adapters(frozen) -> tuple[set, list]:
    """From the masks alone: the distinct (source, stride, channels) the live blocks read
    through an adapter, and the 1/K of each live block that averages several inputs (an early
    block with fewer candidates than K averages all of them)."""
    dead = set(dag_of(frozen).dead_modules())
    keys, scaled = set(), []
    for mc in mask_modules(frozen):
        if mc.target in dead:
            continue
        chosen = mc.chosen.flatten().nonzero().flatten().tolist()
        if len(chosen) > 1:
            scaled.append(1 / len(chosen))
        for k in chosen:
            if mc.strides[k] != (1, 1) or mc.in_channels[k] != mc.out_channels:
                keys.add((mc.candidates[k], mc.strides[k], mc.out_channels))
    return keys, scaled


@pytest.mark.parametrize("fan_in", [1, 2, pytest.param(3, marks=pytest.mark.slow), 4])
def test_optimized_graph_equals_frozen_and_shares_adapters(masked_resnet20, tmp_path, fan_in):
    frozen = freeze(masked_resnet20(fan_in=fan_in, init="random", seed=11))
    plain, _ = mcgraph.compile(frozen, optimize=False)
    fast, rep = mcgraph.compile(frozen)
    assert [p["name"] for p in rep.passes][-1] == "conv_adapters"
    x = rand(3, 1, 16, 16, seed=fan_in)
    ref = eval_outputs(frozen, x)
    assert_same_outputs(ref, eval_outputs(fast, x), rel=1e-5)
    path = mcgraph.export_onnx(fast, tmp_path / "m.onnx", (1, 16, 16))
    plain_path = mcgraph.export_onnx(plain, tmp_path / "plain.onnx", (1, 16, 16))
    assert_same_outputs(ref, deploy.run(deploy.make_session(path), x))
    got = ReferenceEvaluator(str(path)).run(None, {"input": x.numpy()})[0]
    assert_same_outputs(ref, got)
    keys, scaled = _expected_adapters(frozen)
    adapters, scales = adapter_convs(onnx.load(str(path)))
    assert len(adapters) == len(keys), "one adapter per (source, stride, channels)"
    assert len({n.input[0] for n in adapters}) <= len(adapters)
    assert sorted(s for _, s in scales) == pytest.approx(sorted(scaled))
    assert (fan_in == 1) == (not scales)
    ops, plain_ops = deploy.op_counts(path), deploy.op_counts(plain_path)
    assert "Mul" not in ops
    # what is left of Slice/Pad is the blocks' own option-A shortcuts, as in the plain graph
    # minus every adapter's
    assert ops.get("Pad", 0) <= plain_ops.get("Pad", 0)
    assert ops.get("Slice", 0) <= plain_ops.get("Slice", 0)
    assert ops["Conv"] == plain_ops["Conv"] + len(adapters) + len(scales)


def test_an_adapter_read_by_several_blocks_is_computed_once(masked_resnet20, tmp_path):
    # K=4, seed 0: four earlier-stage outputs are each read by two later blocks
    frozen = freeze(masked_resnet20(fan_in=4, init="random", seed=0))
    dead = set(dag_of(frozen).dead_modules())
    reads: dict = {}
    for mc in mask_modules(frozen):
        if mc.target not in dead:
            for k in mc.chosen.flatten().nonzero().flatten().tolist():
                if mc.strides[k] != (1, 1):
                    key = (mc.candidates[k], mc.strides[k], mc.out_channels)
                    reads[key] = reads.get(key, 0) + 1
    assert max(reads.values()) >= 2, "the fixture should share an adapter"
    fast, _ = mcgraph.compile(frozen)
    adapter_nodes = [n for n in fast.graph.nodes if n.meta.get("mcgraph_role") == "adapter"]
    assert len(adapter_nodes) == len(reads)
    shared = [n for n in adapter_nodes if len(n.users) >= 2]
    assert len(shared) == sum(v >= 2 for v in reads.values())


def test_requires_lowered_masks(masked_resnet20):
    with pytest.raises(McGraphError, match=r"^conv_adapters: .*masks"):
        conv_adapters(copy.deepcopy(freeze(masked_resnet20(fan_in=2))))
