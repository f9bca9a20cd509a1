"""Dead-module elimination, proven by outputs and by counting parameters."""
import copy

import pytest
from helpers import assert_same_outputs, eval_outputs, rand

import mcgraph
from mcgraph import McGraphError, count_params, deploy
from mcgraph.ir import carried_dag, dag_of
from mcgraph.passes import eliminate_dead, freeze, lower_masks


def _pipeline(gm):
    frozen = freeze(gm)
    return frozen, dag_of(frozen), eliminate_dead(lower_masks(copy.deepcopy(frozen)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k1_random_removes_blocks_and_keeps_outputs(masked_resnet20, seed):
    frozen, dag, slim = _pipeline(masked_resnet20(fan_in=1, init="random", seed=seed))
    dead = dag.dead_modules()
    assert dead, "K=1 random masks leave unread blocks"
    x = rand(4, 1, 16, 16, seed=seed)
    assert_same_outputs(eval_outputs(frozen, x), eval_outputs(slim, x), rel=1e-6)
    mods = dict(slim.named_modules())
    assert not any(d in mods for d in dead)
    dead_params = sum(count_params(dict(frozen.named_modules())[d]) for d in dead)
    assert count_params(slim) == count_params(frozen) - dead_params


def test_prev_removes_nothing(masked_resnet20):
    frozen, dag, slim = _pipeline(masked_resnet20(fan_in=1, init="prev"))
    assert dag.dead_modules() == []
    assert count_params(slim) == count_params(frozen)


def test_refuses_when_graph_and_dag_disagree(masked_resnet20):
    low = lower_masks(freeze(masked_resnet20(fan_in=1, init="prev")))
    dag = carried_dag(low)                                        # what lower_masks recorded
    dag.graph.edges["layer3.1", "layer3.2"]["chosen"] = False   # DAG now claims layer3.1 is dead
    dag.graph.edges["relu", "layer3.2"]["chosen"] = True
    with pytest.raises(McGraphError, match="eliminate_dead: layer3.1 is dead in the DAG but "
                                           "'layer3_2' reads it"):
        eliminate_dead(low)


def test_onnx_loses_the_dead_blocks_operators(masked_resnet20, tmp_path):
    gm = masked_resnet20(fan_in=1, init="random", seed=1)
    frozen, dag, slim = _pipeline(gm)
    full = mcgraph.create_model("resnet20", in_channels=1)     # the original: every block
    a = deploy.op_counts(mcgraph.export_onnx(full, tmp_path / "full.onnx", (1, 16, 16)))
    b = deploy.op_counts(mcgraph.export_onnx(slim, tmp_path / "slim.onnx", (1, 16, 16)))
    dead = dag.dead_modules()
    assert dead
    assert a["Conv"] == 1 + 2 * 9                               # stem + two 3x3 convs per block
    assert a["Conv"] - b["Conv"] == 2 * len(dead)
    removed = sum(count_params(dict(frozen.named_modules())[d]) for d in dead)
    drop = deploy.initializer_params(tmp_path / "full.onnx") - \
        deploy.initializer_params(tmp_path / "slim.onnx")
    assert 0.99 * removed <= drop <= removed       # BN folds into conv bias: a few scalars fewer


def test_compile_api_report(masked_resnet20):
    gm = masked_resnet20(fan_in=1, init="random", seed=0)
    slim, rep = mcgraph.compile(gm)
    assert rep.params_before == count_params(gm) and rep.params_after == count_params(slim)
    assert rep.modules_after == rep.modules_before - len(rep.removed) and rep.removed
    assert rep.max_abs_diff <= 1e-4 * max(1.0, rep.output_scale)
    masks = [m for m in gm.modules() if isinstance(m, mcgraph.MaskConnect)]
    assert masks and not any(bool(m.frozen) for m in masks)   # the input model is left as it was
