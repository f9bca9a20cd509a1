"""The one shape of a pass: ``(gm) -> PassResult(gm, modified)``, with requires/ensures checks.

Passes subclass torch.fx's :class:`PassBase` (so they also run under its ``PassManager``) and
declare what the driver (:func:`mcgraph.passes.run_passes`) checks around them:

* ``tolerance``: the pass preserves the model's eval outputs to within ``tolerance`` times the
  output scale (exact rewrites: 1e-4, docs/design.md §1); ``None``: the pass may change them
  (inserting uniform masks does). A pass whose exactness depends on the graph overrides
  :meth:`GraphPass.tolerance_for`; a lossy pass overrides :meth:`GraphPass.check_outputs`.
* ``requires(gm)`` / ``ensures(gm)``: raise :class:`McGraphError` naming the pass and the node;
  they check, and change nothing (neither the graph nor the pass).

    class MyPass(GraphPass):
        name, tolerance = "my_pass", 1e-4
        def call(self, gm):
            ...                                   # rewrite gm.graph in place
            return PassResult(gm, True)
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..errors import McGraphError

EXACT = 1e-4          # max abs diff under 1e-4 of the output scale (docs/design.md §1)

__all__ = ["EXACT", "GraphPass", "PassResult"]


class GraphPass(PassBase):
    name: ClassVar[str] = "pass"
    tolerance: float | None = None

    def error(self, message: str, node: fx.Node | str | None = None) -> McGraphError:
        """``McGraphError('<pass>: <node> <message>')``."""
        where = node.name if isinstance(node, fx.Node) else node
        return McGraphError(self.name, f"{where} {message}" if where else message)

    def tolerance_for(self, gm: fx.GraphModule) -> float | None:
        """The tolerance the driver checks this pass with on ``gm`` (default: ``tolerance``)."""
        return self.tolerance

    def check_outputs(self, before: torch.Tensor, after: torch.Tensor,
                      tolerance: float | None = None) -> tuple[float, str | None]:
        """(max |after - before|, why the pass must be refused or None)."""
        if before.shape != after.shape:
            return float("inf"), (f"changed the output shape {tuple(before.shape)} -> "
                                  f"{tuple(after.shape)}")
        diff = float((after.float() - before.float()).abs().max()) if before.numel() else 0.0
        scale = max(1.0, float(before.float().abs().max()) if before.numel() else 0.0)
        tol = self.tolerance if tolerance is None else tolerance
        if tol is not None and not diff <= tol * scale:
            return diff, (f"changed the outputs: max |diff| {diff:.3g} > {tol:g} x "
                          f"output scale {scale:.3g}")
        return diff, None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
