import copy

import pytest
from helpers import assert_same_outputs, eval_outputs, rand

from mcgraph import McGraphError
from mcgraph.ir import dag_of
from mcgraph.masks import MaskConnect
from mcgraph.passes import freeze, lower_masks
from mcgraph.passes.reads import graph_reads


def test_lowered_graph_has_no_masks_and_same_outputs(masked_resnet20):
    gm = freeze(masked_resnet20(fan_in=3, init="random", seed=1))
    x = rand(3, 1, 16, 16)
    low = lower_masks(copy.deepcopy(gm))
    assert not any(isinstance(m, MaskConnect) for m in low.modules())
    assert "mcgraph_masks" not in dict(low.named_children())
    assert_same_outputs(eval_outputs(gm, x), eval_outputs(low, x), rel=1e-6)
    # every block reads, in the graph, exactly the K inputs its frozen mask chose
    dag = dag_of(gm)
    reads = graph_reads(low)
    assert reads == {b: set(dag.chosen_inputs(b)) for b in dag.blocks()}
    assert all(len(r) == min(3, len(dag.candidates(b))) for b, r in reads.items())


def test_lowering_needs_frozen_masks(masked_resnet20):
    with pytest.raises(McGraphError, match="lower_masks: the mask of layer1.0 is not frozen"):
        lower_masks(masked_resnet20())
