import networkx as nx

from mcgraph import ModuleDAG
from mcgraph.ir import HEAD, dag_of


def test_json_round_trip(masked_resnet20):
    dag = dag_of(masked_resnet20(fan_in=2, init="random", seed=5))
    back = ModuleDAG.from_json(dag.to_json())
    assert back == dag and back.dead_modules() == dag.dead_modules()
    assert len(dag.blocks()) == 9 and dag.graph.number_of_edges() == 45 + 1   # + last -> head
    e = dag.graph.edges["relu", "layer3.2"]
    assert e["stride"] == [4, 4] and e["pad"] == 48


def _dag(chosen):
    g = nx.DiGraph(level="module")
    g.add_node("stem", kind="source", index=-1)
    for i, b in enumerate("abcd"):
        g.add_node(b, kind="block", index=i)
    for src, dst in [("stem", "a"), ("stem", "b"), ("a", "b"), ("stem", "c"), ("a", "c"),
                     ("b", "c"), ("stem", "d"), ("a", "d"), ("b", "d"), ("c", "d")]:
        g.add_edge(src, dst, mask=0.5, chosen=(src, dst) in chosen, stride=[1, 1], pad=0)
    g.add_node(HEAD, kind="head", index=5)
    g.add_edge("d", HEAD, mask=1.0, chosen=True, stride=[1, 1], pad=0)
    return ModuleDAG(g)


def test_dead_is_transitive():
    # d reads c; c reads b; b reads stem. a is read only by nobody live.
    dag = _dag({("stem", "a"), ("stem", "b"), ("b", "c"), ("c", "d")})
    assert dag.dead_modules() == ["a"]
    # d reads stem only: a, b, c are all dead, even though c reads b (dead readers don't count)
    dag = _dag({("stem", "a"), ("a", "b"), ("b", "c"), ("stem", "d")})
    assert dag.dead_modules() == ["a", "b", "c"]
    assert dag.chosen_inputs("d") == ["stem"]
