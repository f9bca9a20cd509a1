"""The Pareto picture: the front of the means, and the spec key that asks for it."""
import pytest

from mcgraph import McGraphError
from mcgraph.experiment.pareto import front
from mcgraph.experiment.spec import parse_spec


def test_the_front_keeps_what_nothing_beats_on_both():
    pts = [(1, 80, "a"), (2, 79, "b"), (2, 85, "c"), (3, 84, "d"), (4, 90, "e")]
    assert [p[2] for p in front(pts)] == ["a", "c", "e"]


def test_figure_with_is_a_list_of_table_names():
    base = {"name": "t", "models": ["resnet20"], "configs": [{"name": "c"}]}
    spec = parse_spec({"tables": [{**base, "figure_with": ["u"]}, {**base, "name": "u"}]})
    assert spec.tables[0].figure_with == ("u",) and spec.tables[1].figure_with == ()
    with pytest.raises(McGraphError, match="figure_with must be a list"):
        parse_spec({"tables": [{**base, "figure_with": "u"}]})
