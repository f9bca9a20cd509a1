"""Compile of branch masks: dead branches go, grouped convs shrink, ONNX agrees."""
import copy

import onnx
import pytest
from helpers import assert_same_outputs, eval_outputs, rand

import mcgraph
from mcgraph import count_params, deploy
from mcgraph.branches import BranchBlock
from mcgraph.ir import dag_of
from mcgraph.passes import freeze, prune_branches


def _branch_params(bb: BranchBlock) -> int:
    """Parameters that belong to one branch: its conv1/conv2/conv3 slices and BN1/BN2 slices."""
    c = bb.cardinality
    return sum(p.numel() for p in (bb.conv1.weight, bb.conv2.weight, bb.conv3.weight,
                                   bb.bn1.weight, bb.bn1.bias, bb.bn2.weight, bb.bn2.bias)) // c


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    gm = mcgraph.rewrite("resnext29_4x16d", fan_in=1, init="random", seed=3, input_size=(16, 16))
    frozen = freeze(copy.deepcopy(gm)).eval()
    dag = dag_of(frozen)
    slim = prune_branches(copy.deepcopy(frozen)).eval()
    path = mcgraph.export_onnx(slim, tmp_path_factory.mktemp("rx") / "slim.onnx", (3, 16, 16))
    return frozen, dag, slim, path


def test_slim_reproduces_frozen(compiled):
    frozen, _, slim, _ = compiled
    x = rand(3, 3, 16, 16)
    assert_same_outputs(eval_outputs(frozen, x), eval_outputs(slim, x), rel=1e-5)


def test_parameters_fall_by_the_dead_branches_the_dag_predicts(compiled):
    frozen, dag, slim, _ = compiled
    dead = dag.dead_modules()
    assert dead, "K=1 random branch masks leave unread branches"
    per_block = {}
    for name in dead:
        block = name.split("/")[0]
        per_block[block] = per_block.get(block, 0) + 1
    predicted = sum(n * _branch_params(frozen.get_submodule(b)) for b, n in per_block.items())
    assert count_params(slim) == count_params(frozen) - predicted   # masks are not counted
    # a branch is dead exactly when no row of its block's mask selects it
    for b in {n.split("/")[0] for n in dag.blocks()}:
        cols = frozen.get_submodule(b).mask.chosen.any(dim=0)
        assert ([f"{b}/{k}" for k in range(4) if not cols[k]]
                == [d for d in dead if d.startswith(b + "/")])


@pytest.mark.parametrize("batch", [1, 4])
def test_onnxruntime_reproduces_slim(compiled, batch):
    _, _, slim, path = compiled
    x = rand(batch, 3, 16, 16, seed=batch)
    assert_same_outputs(eval_outputs(slim, x), deploy.run(deploy.make_session(path), x))


def test_grouped_convs_carry_the_smaller_group_counts(compiled):
    frozen, dag, _, path = compiled
    model = onnx.load(str(path))
    groups = sorted({a.i for n in model.graph.node if n.op_type == "Conv"
                     for a in n.attribute if a.name == "group"})
    live = {b: 4 - sum(1 for d in dag.dead_modules() if d.startswith(b + "/"))
            for b in {n.split("/")[0] for n in dag.blocks()}}
    assert max(groups) <= 4 and set(live.values()) - {1} <= set(groups)
    assert "Einsum" not in deploy.op_counts(path) and "Mul" not in deploy.op_counts(path)


def test_compile_api_reports_branches():
    gm = mcgraph.rewrite("resnext29_4x16d", fan_in=1, init="random", seed=3, input_size=(16, 16))
    slim, rep = mcgraph.compile(gm)
    assert rep.modules_before == 36 and rep.modules_after == 36 - len(rep.removed)
    assert all("/" in r for r in rep.removed) and rep.params_after < rep.params_before
    assert rep.max_abs_diff <= 1e-4 * max(1.0, rep.output_scale)
