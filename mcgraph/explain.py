"""Why each module is, or is not, a MaskConnect module, and why a candidate input is left out.

    ex = mcgraph.explain("torchvision:mobilenet_v2", input_size=(64, 64))
    ex.error           # 'find_modules: features.5 reads ..., not the previous block features.3 ...'
    ex.verdicts[:2]    # [{'module': 'features', 'type': 'Sequential', 'block': False, ...}]
    explanation_of(mcgraph.load("m.pt")).blocks      # of a rewritten or loaded model
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import torch
from torch import fx, nn

from . import graph_meta
from .errors import McGraphError
from .ir import ModuleDAG


@dataclass
class Explanation:
    model: str
    blocks: list[str]                               # the chain, in order ([] when refused)
    verdicts: list[dict[str, Any]]                  # module, type, block, reason ([]: modules
                                                    # given)
    unreachable: dict[str, list[list[str]]] = field(default_factory=dict)   # block: [[input, why]]
    level: str | None = None
    modules: list[str] | None = None                # the user's override, when given
    error: str | None = None                        # the refusal, one line

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rows(self) -> list[list[str]]:
        """[module, type, verdict, reason] per module the search visited."""
        return [[v["module"], v["type"], "block" if v["block"] else "-", v["reason"]]
                for v in self.verdicts]


def explanation_of(gm: fx.GraphModule, error: str | None = None) -> Explanation:
    """Read what discovery and find_modules recorded on ``gm`` (a traced, rewritten or loaded
    model)."""
    disc = graph_meta.discovery(gm) or {}
    dag = graph_meta.dag(gm)
    blocks = dag.block_names() if isinstance(dag, ModuleDAG) and error is None else []
    record = graph_meta.rewrite_record(gm) if graph_meta.has_record(gm) else {}
    mods = record.get("modules")
    return Explanation(
        model=record.get("model") or gm._get_name(), blocks=blocks,
        verdicts=[v.to_dict() for v in disc.get("verdicts", [])],
        unreachable={b: [list(p) for p in ps] for b, ps in graph_meta.unreachable(gm).items()},
        level=dag.level if isinstance(dag, ModuleDAG) and error is None else None,
        modules=mods, error=error)


def explain(model: nn.Module | str, *, input_size: tuple[int, int] | None = None,
            example_input: torch.Tensor | None = None,
            modules: Iterable[type | str] | None = None, model_args: dict[str, Any] | None = None,
            num_classes: int | None = None, in_channels: int | None = None,
            weights: str | None = None, level: str = "auto") -> Explanation:
    """Run the analysis :func:`mcgraph.rewrite` runs before inserting masks (trace,
    annotate_shapes, discover_blocks, find_modules) and report every decision; a refusal is
    returned in ``error``, not raised (errors before the analysis, like an unknown model or an
    untraceable one, still raise)."""
    from .api import build
    from .passes import pipelines, run_passes
    from .tracing import annotate_shapes, trace
    model, name, _, x = build(model, model_args, num_classes, in_channels, weights, input_size,
                              example_input)
    mods = None if modules is None else list(modules)
    gm = annotate_shapes(trace(model, mods), x)
    graph_meta.set_rewrite_record(gm, {
        "model": name or type(model).__name__,
        "modules": (None if mods is None
                    else [m if isinstance(m, str) else m.__name__ for m in mods])})
    error = None
    try:
        run_passes(gm, pipelines.analysis(mods, level))
    except McGraphError as e:
        error = str(e)
    return explanation_of(gm, error)
