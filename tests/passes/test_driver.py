"""The pass driver: it proves every rewrite, refuses a pass that alters outputs, and keeps the
module DAG carried on the graph equal to the DAG rebuilt from the masks after every pass."""
import copy
import operator

import pytest
import torch
from helpers import rand
from torch import fx

import mcgraph
from mcgraph import McGraphError, ModuleDAG
from mcgraph.ir import carried_dag, dag_of
from mcgraph.passes import (
    EXACT,
    EliminateDead,
    Freeze,
    GraphPass,
    LowerMasks,
    PassResult,
    PruneBranches,
    run_passes,
)


class ScaleLogits(GraphPass):
    """A deliberately broken 'exact' pass: it multiplies the logits by (1 + eps)."""
    name, tolerance = "scale_logits", EXACT

    def __init__(self, eps: float):
        self.eps = eps

    def call(self, gm: fx.GraphModule) -> PassResult:
        out = next(n for n in gm.graph.nodes if n.op == "output")
        logits = out.args[0]
        with gm.graph.inserting_before(out):
            scaled = gm.graph.call_function(operator.mul, (logits, 1.0 + self.eps))
        out.args = (scaled,)
        return PassResult(gm, True)


def test_driver_refuses_a_pass_that_alters_outputs(masked_resnet20):
    gm = masked_resnet20(fan_in=1, init="random")
    with pytest.raises(McGraphError, match=r"scale_logits: refused: the pass changed the outputs: "
                                           r"max \|diff\| .* > 0.0001 x output scale"):
        run_passes(gm, [Freeze(), ScaleLogits(eps=1e-2)])


def test_driver_accepts_a_change_within_the_declared_tolerance(masked_resnet20):
    gm = masked_resnet20(fan_in=1, init="random")
    res = run_passes(gm, [ScaleLogits(eps=1e-7)])
    (rec,) = res.records
    assert rec.name == "scale_logits" and rec.modified and 0 < rec.max_abs_diff < 1e-4


def test_a_lossy_pass_declares_its_own_check(masked_resnet20):
    class Lossy(ScaleLogits):
        name, tolerance = "lossy", 0.5            # e.g. a quantizer: its own, looser bound

    res = run_passes(masked_resnet20(fan_in=1, init="random"), [Lossy(eps=1e-2)])
    assert res.records[0].max_abs_diff > 1e-4


def test_ill_formed_graph_is_refused_naming_the_pass(masked_resnet20):
    class Dangling(GraphPass):
        name = "dangling"

        def call(self, gm):
            mods = [n for n in gm.graph.nodes if n.op == "call_module"]
            mods[0].args = (mods[-1],)                # reads a value defined later: lint fails
            return PassResult(gm, True)

    with pytest.raises(McGraphError, match="dangling: left an ill-formed graph"):
        run_passes(masked_resnet20(), [Dangling()])


def test_requires_names_the_pass(masked_resnet20):
    with pytest.raises(McGraphError, match="lower_masks: the mask of layer1.0 is not frozen"):
        run_passes(masked_resnet20(), [LowerMasks()])
    with pytest.raises(McGraphError, match="eliminate_dead: the model still has masks"):
        run_passes(masked_resnet20(), [EliminateDead()])
    with pytest.raises(McGraphError, match="prune_branches: the model has no branch blocks"):
        run_passes(masked_resnet20(), [Freeze(), PruneBranches()])


@pytest.mark.parametrize("level", ["module", "branch"])
def test_carried_dag_equals_the_dag_rebuilt_from_the_masks_after_every_pass(level,
                                                                             masked_resnet20):
    if level == "module":
        gm = masked_resnet20(fan_in=2, init="random", seed=4)
    else:
        gm = mcgraph.rewrite("resnext29_4x16d", fan_in=1, init="random", seed=4,
                             input_size=(16, 16))
    assert dag_of(gm) == ModuleDAG.from_graph_module(gm)          # after the rewrite passes
    # training moves the masks: the DAG reads the new values, it does not go stale
    with torch.no_grad():
        for m in mcgraph.mask_parameters(gm):
            m.copy_(torch.rand(m.shape, generator=torch.Generator().manual_seed(9)))
    assert dag_of(gm) == ModuleDAG.from_graph_module(gm)
    before = dag_of(gm)
    run_passes(gm, [Freeze()])
    assert dag_of(gm) == ModuleDAG.from_graph_module(gm)
    assert all(d["frozen"] for n, d in dag_of(gm).graph.nodes(data=True) if n in before.blocks())
    # once the masks are lowered the DAG still answers, from what it recorded
    rest = [PruneBranches()] if level == "branch" else [LowerMasks(), EliminateDead()]
    slim = run_passes(copy.deepcopy(gm), rest).graph_module
    after = dag_of(slim)
    assert not mcgraph.masks.mask_modules(slim)
    assert after.dead_modules() == before.dead_modules() and before.dead_modules()
    assert {b: after.chosen_inputs(b) for b in after.blocks()} == \
        {b: before.chosen_inputs(b) for b in before.blocks()}
    assert all(after.graph.nodes[b].get("removed") for b in after.dead_modules())


def test_driver_reports_each_pass(masked_resnet20):
    gm = masked_resnet20(fan_in=1, init="random", seed=2)
    res = run_passes(gm, [Freeze(), LowerMasks(), EliminateDead()], probe=rand(3, 1, 16, 16))
    assert [r.name for r in res.records] == ["freeze", "lower_masks", "eliminate_dead"]
    assert all(r.modified and r.max_abs_diff is not None and r.max_abs_diff <= 1e-5
               for r in res.records)
    again = run_passes(res.graph_module, [EliminateDead()])          # nothing left to remove
    assert not again.records[0].modified


def test_dag_without_find_modules_is_a_clear_error():
    from mcgraph.tracing import trace
    gm = trace(mcgraph.create_model("resnet20"))
    with pytest.raises(McGraphError, match="carries no module DAG; run find_modules"):
        carried_dag(gm)
