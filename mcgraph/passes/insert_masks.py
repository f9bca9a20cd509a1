"""Rewrite pass: make every block read a learnable K-sparse masked sum of earlier outputs.

Requires: a module-level DAG on the graph (:class:`FindModules`) and no masks yet.
Ensures:  block j's input is ``mcgraph_masks.<block>(*candidates)``, a :class:`MaskConnect` over
          the DAG's candidate edges of j (the source and every earlier block a parameter-free
          adapter can bring to j's input shape, across stages); the DAG records each mask as its
          edges' ``selector``. With ``fan_in=1, init='prev'`` the model computes what it computed
          before, and the driver checks it (tolerance 1e-4); other inits change the outputs.

    gm = annotate_shapes(trace(resnet), torch.randn(1, 3, 32, 32))
    gm = run_passes(gm, [FindModules(), InsertMasks(fan_in=2, init="uniform")]).graph_module
"""
from __future__ import annotations

from torch import fx

from ..errors import McGraphError
from ..ir import carried_dag
from ..masks import AGGREGATES, GRADS, INITS, MaskConnect, mask_modules
from .base import EXACT, GraphPass, PassResult

MASK_ROOT = "mcgraph_masks"


def mask_path(block_name: str) -> str:
    return f"{MASK_ROOT}.{block_name.replace('.', '_')}"


def check_mask_options(where: str, fan_in: int, init: str, mask_grad: str,
                       inits: tuple[str, ...] = INITS) -> None:
    """The options every mask-inserting pass validates the same way."""
    if init not in inits:
        raise McGraphError(where, f"init '{init}' does not apply here; use one of "
                                  f"{', '.join(inits)}", "init")
    if mask_grad not in GRADS:
        raise McGraphError(where, f"unknown mask gradient '{mask_grad}', expected one of "
                                  f"{GRADS}", "mask_grad")
    if fan_in < 1:
        raise McGraphError(where, f"fan-in K must be >= 1, got {fan_in}", "fan_in")


class InsertMasks(GraphPass):
    name = "insert_masks"

    def __init__(self, fan_in: int, init: str = "uniform", seed: int = 0,
                 mask_grad: str = "normalized", aggregate: str = "mean"):
        check_mask_options(self.name, fan_in, init, mask_grad)
        if aggregate not in AGGREGATES:
            raise McGraphError(self.name, f"unknown aggregate '{aggregate}', expected one of "
                                          f"{AGGREGATES}", "aggregate")
        self.fan_in, self.init, self.seed = int(fan_in), init, int(seed)
        self.mask_grad, self.aggregate = mask_grad, aggregate
        # K=1 'prev' reads each block's original input: the model computes what it did
        self.tolerance = EXACT if (fan_in == 1 and init == "prev") else None

    def requires(self, gm: fx.GraphModule) -> None:
        dag = carried_dag(gm, self.name)
        if dag.level != "module":
            raise self.error(f"the DAG is {dag.level}-level; use split_branches")
        if mask_modules(gm):
            raise self.error(f"{gm._get_name()} already has masks")

    def call(self, gm: fx.GraphModule) -> PassResult:
        dag = carried_dag(gm, self.name)
        blocks = dag.blocks()
        most = max(len(dag.candidates(b)) for b in blocks)
        if self.fan_in > most:
            raise self.error(f"fan-in K={self.fan_in} is larger than the candidates of every "
                             f"module (at most {most}, at {blocks[-1]})")
        nodes = {n.name: n for n in gm.graph.nodes}
        nodes.update({str(n.target): n for n in gm.graph.nodes if n.op == "call_module"})
        for i, name in enumerate(blocks):
            block, cands = nodes[name], dag.candidates(name)
            orig = block.args[0]
            prev = next((k for k, c in enumerate(cands) if nodes[c] is orig), None)
            if prev is None:      # the original input is always adaptable (identity); guard anyway
                raise self.error(f"cannot read its own original input {orig.name}", name)
            edges = [dag.graph.edges[c, name] for c in cands]
            mc = MaskConnect(name, cands, [tuple(e["stride"]) for e in edges],
                             [_channels(nodes[c]) for c in cands], _channels(orig),
                             fan_in=self.fan_in, init=self.init, prev=prev, seed=self.seed,
                             index=i, grad=self.mask_grad, aggregate=self.aggregate)
            path = mask_path(name)
            gm.add_submodule(path, mc)
            with gm.graph.inserting_before(block):
                mnode = gm.graph.call_module(path, tuple(nodes[c] for c in cands))
            mnode.meta["tensor_meta"] = orig.meta.get("tensor_meta")
            block.args = (mnode,)
            dag.set_selector(name, path, mc.fan_in)
        return PassResult(gm, True)

    def ensures(self, gm: fx.GraphModule) -> None:
        dag = carried_dag(gm, self.name)
        mods = dict(gm.named_modules())
        for b in dag.blocks():
            path = dag.graph.edges[dag.candidates(b)[0], b]["selector"]
            if not isinstance(mods.get(path), MaskConnect):
                raise self.error("has no mask after the pass", b)


def _channels(node: fx.Node) -> int:
    return int(node.meta["tensor_meta"].shape[1])


def insert_masks(gm: fx.GraphModule, fan_in: int, init: str = "uniform", seed: int = 0,
                 mask_grad: str = "normalized", aggregate: str = "mean") -> fx.GraphModule:
    """Run :class:`InsertMasks` through the driver on a graph that carries a module DAG."""
    from .driver import run_passes
    return run_passes(gm, [InsertMasks(fan_in, init, seed, mask_grad, aggregate)]).graph_module
