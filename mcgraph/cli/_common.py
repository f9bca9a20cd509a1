"""Small helpers shared by the commands: tables, sizes, JSON output."""
from __future__ import annotations

import json
from typing import Any, Sequence

import click


def parse_size(value: str | None) -> tuple[int, int] | None:
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
        raise click.BadParameter(f"expected HxW like 32x32, got '{value}'") from None
    if h < 1 or w < 1:
        raise click.BadParameter(f"sizes must be positive, got '{value}'")
    return h, w


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(cells[0]), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]])


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
