"""Small helpers shared by the commands: tables, sizes, JSON output."""
from __future__ import annotations

import json
from typing import Any, Sequence

import click

from ..errors import McGraphError
from ..sources import parse_model_args

MAX_SIDE = 16384


def parse_size(value: str | None, hint: str = "'--input-size'") -> tuple[int, int] | None:
    if value is None:
        return None
    parts = value.lower().split("x")
    try:
        if len(parts) == 1:
            h = w = int(parts[0])
        elif len(parts) == 2:
            h, w = int(parts[0]), int(parts[1])
        else:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"expected HxW like 32x32, got '{value}'",
                                 param_hint=hint) from None
    if h < 1 or w < 1:
        raise click.BadParameter(f"sizes must be positive, got '{value}'", param_hint=hint)
    if max(h, w) > MAX_SIDE:   # tracing would try to allocate the activations: hundreds of GB
        raise click.BadParameter(f"sizes must be at most {MAX_SIDE} per side, got '{value}'",
                                 param_hint=hint)
    return h, w


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    rule = ["-" * w for w in widths]
    return "\n".join([line(cells[0]), line(rule)] + [line(r) for r in cells[1:]])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and abs(v) >= 10_000:
        return f"{v:,}"
    return str(v)


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def config_option(cls: type, name: str, *decls: str, **kw: Any):
    """A click option whose default (and, for ``Literal`` fields, choices) come from the config
    dataclass ``cls``: one source for every default. ``decls`` default to ``--field-name``."""
    from ..config import MISSING_DEFAULT, choices, default
    d = default(cls, name) if name in cls.__dataclass_fields__ else MISSING_DEFAULT
    allowed = choices(cls, name)
    if allowed and "type" not in kw and not kw.get("is_flag"):
        kw["type"] = click.Choice(allowed)
    if d is not MISSING_DEFAULT and "default" not in kw:
        kw["default"] = d
        kw.setdefault("show_default", d is not None)
    return click.option(*(decls or (f"--{name.replace('_', '-')}",)), name, **kw)


TRUST_HELP = ("Rebuild a model whose checkpoint names a file or module source "
              "(path/file.py:factory, package.module:factory): that runs its code.")


def _model_args(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]):
    try:
        return tuple(parse_model_args(values).items())
    except McGraphError as e:
        raise click.BadParameter(e.message) from None


def model_arg_option():
    """``--model-arg key=value`` (repeatable) -> the config's ``model_args`` pairs."""
    return click.option("--model-arg", "model_args", multiple=True, default=(),
                        callback=_model_args, metavar="KEY=VALUE",
                        help="Keyword argument for the model's factory or constructor "
                             "(repeatable); VALUE is a Python literal or a plain string.")


def trust_code_option():
    return click.option("--trust-code", is_flag=True, default=False, help=TRUST_HELP)


def explain_table(ex) -> str:
    """The discovery's verdicts, the chain found (or the refusal) and the left-out inputs."""
    lines = []
    if ex.modules:
        lines.append(f"blocks given with --modules: {', '.join(ex.modules)}")
    if ex.verdicts:
        lines.append(table(ex.rows(), ["module", "type", "verdict", "reason"]))
    if ex.error:
        lines.append(f"refused: {ex.error}")
    else:
        lines.append(f"{len(ex.blocks)} blocks ({ex.level} level): {', '.join(ex.blocks)}")
    for b, left in ex.unreachable.items():
        lines.append(f"{b}: left out " + "; ".join(f"{c} ({why})" for c, why in left))
    return "\n".join(lines)
