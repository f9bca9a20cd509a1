"""Is a module a residual block? Decided by tracing the module itself, never by its type.

A residual block computes ``act(F(x) + S(x))`` (or ``F(x) + S(x)``, pre-activation style): its
output is a sum, after at most a chain of one-input ops (activations, dropout), of two paths
from its one input, where S is the identity or a projection (conv, conv+norm, pool+conv, ...)
and the two paths share nothing before they split but parameter-free ops and normalization (a
pre-activation). Gates (squeeze-excitation, ECA, attention), drop-path and layer scale live
inside F and do not matter. A stage that chains blocks is *not* one: its sum's paths share the
previous block's sum, so the search looks inside it.

    form = residual_form(torchvision.models.resnet.BasicBlock(8, 8))
    form.ok, form.reason      # True, 'block: relu(F(x) + S(x)), S = identity'
    verdicts, names = find_candidates(model)    # outermost residual modules, with every reason
"""
from __future__ import annotations

import inspect
import operator
from dataclasses import dataclass

import torch
from torch import fx, nn

from .errors import first_line

_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_"}
# elementwise one-input ops: what may follow the sum (act) or precede the split (a pre-activation
# trunk); never a convolution, a linear layer, a pooling or a reshape
_ACT_MODULES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.Identity,
                nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Hardswish, nn.ELU,
                nn.PReLU, nn.RReLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardsigmoid, nn.Hardtanh,
                nn.CELU, nn.SELU, nn.GLU, nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid,
                nn.Threshold, nn.modules.dropout._DropoutNd)
_ACT_NAMES = {"relu", "relu_", "relu6", "silu", "silu_", "gelu", "sigmoid", "sigmoid_", "tanh",
              "tanh_", "hardswish", "hardsigmoid", "hardtanh", "leaky_relu", "elu", "celu", "selu",
              "mish", "prelu", "rrelu", "softplus", "softsign", "logsigmoid", "threshold", "erf",
              "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
              "feature_alpha_dropout", "clamp", "clamp_", "clamp_min", "contiguous",
              "batch_norm", "layer_norm", "group_norm",
              # elementwise arithmetic, for activations written out (x * sigmoid(x))
              "mul", "mul_", "truediv", "div", "div_", "sub", "neg"}


@dataclass(frozen=True)
class Verdict:
    """Why a module is, or is not, a MaskConnect module. ``rank`` orders failures by how close
    they came (higher: nearer to a block), for the refusal's list of nearest candidates."""
    module: str
    type: str
    block: bool
    reason: str
    rank: int = 0

    def to_dict(self) -> dict:
        return {"module": self.module, "type": self.type, "block": self.block,
                "reason": self.reason}


@dataclass(frozen=True)
class Form:
    ok: bool
    reason: str
    rank: int = 0


def trace_alone(module: nn.Module, leaves: tuple[nn.Module, ...] = ()) -> fx.GraphModule:
    """``module`` traced by itself (torch.nn layers and ``leaves`` stay calls); arguments after
    the first that have defaults are fixed to them, so ``forward(x, mask=None)`` traces."""
    class _T(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return any(m is leaf for leaf in leaves) or super().is_leaf_module(m, qualname)

    params = list(inspect.signature(module.forward).parameters.values())
    concrete = {p.name: p.default for p in params[1:] if p.default is not inspect.Parameter.empty}
    tracer = _T()
    graph = tracer.trace(module, concrete_args=concrete or None)
    return fx.GraphModule(tracer.root, graph)


def _is_add(n: fx.Node) -> bool:
    return (n.op == "call_function" and n.target in _ADD_FUNCTIONS) or (
        n.op == "call_method" and n.target in _ADD_METHODS)


def _op_name(gm: fx.GraphModule, n: fx.Node) -> str:
    if n.op == "call_module":
        return type(gm.get_submodule(str(n.target))).__name__.lower()
    if n.op == "call_function":
        return getattr(n.target, "__name__", str(n.target))
    return str(n.target) if n.op == "call_method" else n.op


def _descendants(x: fx.Node) -> set[fx.Node]:
    seen, todo = {x}, [x]
    while todo:
        for u in todo.pop().users:
            if u not in seen:
                seen.add(u)
                todo.append(u)
    return seen


def _ancestors(n: fx.Node, within: set[fx.Node]) -> set[fx.Node]:
    seen, todo = {n}, [n]
    while todo:
        for a in todo.pop().all_input_nodes:
            if a in within and a not in seen:
                seen.add(a)
                todo.append(a)
    return seen


def _elementwise(gm: fx.GraphModule, n: fx.Node) -> bool:
    """An activation, a normalization or dropout: may follow the sum or precede the split."""
    if n.op == "call_module":
        return isinstance(gm.get_submodule(str(n.target)), _ACT_MODULES)
    if n.op in ("call_function", "call_method"):
        return getattr(n.target, "__name__", n.target) in _ACT_NAMES
    return False


def _dominators(gm: fx.GraphModule, x: fx.Node, live: set[fx.Node]) -> dict[fx.Node, fx.Node]:
    """Immediate dominators of the nodes that depend on ``x``, in the module's graph from ``x``."""
    import networkx as nx
    g = nx.DiGraph()
    g.add_node(x)
    for n in live:
        for a in n.all_input_nodes:
            if a in live:
                g.add_edge(a, n)
    return nx.immediate_dominators(g, x)


def graph_form(gm: fx.GraphModule) -> Form:
    """The residual test on a traced module (see the module docstring)."""
    # arguments fixed to their defaults keep a placeholder (with the default): not inputs
    xs = [n for n in gm.graph.nodes if n.op == "placeholder" and not n.args]
    if len(xs) != 1:
        return Form(False, f"takes {len(xs)} inputs; a block takes one tensor", 1)
    x = xs[0]
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    if not isinstance(out, fx.Node):
        return Form(False, f"returns a {type(out).__name__}, not one tensor", 1)
    live = _descendants(x)
    idom = _dominators(gm, x, live)
    v, act = out, []
    while v is not x and not _is_add(v):
        # from the output inwards, elementwise ops only (an activation written out, x * sigmoid(x),
        # is several: all between v and its dominator must be elementwise)
        ins = [a for a in v.all_input_nodes if a in live]
        d = idom.get(v, x)
        between = (_ancestors(v, live) & _descendants(d)) - {d, v}
        if not _elementwise(gm, v) or not all(_elementwise(gm, n) for n in between):
            if len(ins) > 1:
                return Form(False, f"output is a {_op_name(gm, v)} of {len(ins)} paths, not a sum "
                                   "F(x) + S(x)", 3)
            return Form(False, f"output comes from a {_op_name(gm, v)}, not from a sum "
                               "F(x) + S(x)", 2)
        act.append(_op_name(gm, v) if len(ins) == 1 else f"{_op_name(gm, v)}-of-{len(ins)}")
        v = d
    if v is x:
        return Form(False, "output does not add its input (no sum on its output path)", 2)
    operands = [a for a in v.all_input_nodes if a in live]
    if len(operands) != 2:
        what = "a constant" if len(operands) == 1 else f"{len(operands)} paths"
        return Form(False, f"its sum adds {what}, not two paths from its input", 3)
    shared = _ancestors(operands[0], live) & _ancestors(operands[1], live)
    shared.discard(x)
    inner = sorted((n for n in shared if not _elementwise(gm, n)),
                   key=lambda n: -len(_ancestors(n, live)))
    if inner:
        why = ("chains residual blocks" if any(_is_add(n) for n in shared)
               else "transforms its input before the sum's paths split")
        return Form(False, f"{why} (both paths of its sum read '{inner[0].name}'); "
                           "looking inside", 4)
    def cost(a: fx.Node) -> tuple[int, int]:        # S: the path with fewer layers, then ops
        anc = _ancestors(a, live) - shared - {x}
        return sum(n.op == "call_module" and not _elementwise(gm, n) for n in anc), len(anc)

    s = min(operands, key=cost)
    path = sorted(_ancestors(s, live) - shared - {x}, key=lambda n: list(gm.graph.nodes).index(n))
    sc = ", ".join(_op_name(gm, n) for n in path) if path else "identity"
    head = "(".join(act) + "(" if act else ""          # act: from the output inwards
    tail = ")" * len(act)
    pre = " (pre-activation)" if not act else ""
    return Form(True, f"block: {head}F(x) + S(x){tail}{pre}, S = {sc}", 9)


def residual_form(module: nn.Module) -> Form:
    """Trace ``module`` alone and test it (never raises: an untraceable module is not a block)."""
    try:
        gm = trace_alone(module)
    except Exception as e:  # fx raises TraceError, TypeError, NotImplementedError, ...
        return Form(False, "cannot be traced alone by torch.fx "
                           f"({type(e).__name__}: {first_line(e, 80)})", 0)
    return graph_form(gm)


def only_child(module: nn.Module) -> str | None:
    """The name of the direct child ``module`` merely forwards to (a wrapper or a one-block
    Sequential), or None: the block is then that child."""
    children = dict(module.named_children())
    if not children:
        return None
    try:
        gm = trace_alone(module, tuple(children.values()))
    except Exception:
        return None
    body = [n for n in gm.graph.nodes if n.op not in ("placeholder", "output")]
    x = next(n for n in gm.graph.nodes if n.op == "placeholder")
    only = body[0] if len(body) == 1 else None
    if only is not None and only.op == "call_module" and only.args == (x,) and not only.kwargs:
        name = str(body[0].target)
        return name if name in children else None
    return None


def _is_layer(m: nn.Module) -> bool:
    """A torch.nn layer fx keeps whole (Conv2d, ReLU, ...): never a block, nothing inside."""
    return fx.Tracer().is_leaf_module(m, "") and not isinstance(m, (nn.ModuleList, nn.ModuleDict))


def find_candidates(model: nn.Module) -> tuple[list[Verdict], list[str]]:
    """Walk the module tree top-down: a module of residual form is a candidate block and its
    inside is not searched (the outermost wins); any other module is searched. Returns every
    verdict (modules visited, in tree order) and the candidates' qualified names."""
    verdicts: list[Verdict] = []
    found: list[str] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            q = f"{prefix}.{name}" if prefix else name
            if _is_layer(child):
                continue
            if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
                visit(q, child)                        # containers are not called; their items are
                continue
            form = residual_form(child)
            if form.ok:
                inner = only_child(child)
                if inner is not None:                  # a wrapper: the block is what it wraps
                    verdicts.append(Verdict(q, type(child).__name__, False,
                                            f"forwards to its only child {q}.{inner}", 5))
                    visit(q, child)
                    continue
                verdicts.append(Verdict(q, type(child).__name__, True, form.reason, form.rank))
                found.append(q)
            else:
                verdicts.append(Verdict(q, type(child).__name__, False, form.reason, form.rank))
                visit(q, child)

    visit("", model)
    return verdicts, found
