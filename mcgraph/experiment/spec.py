"""The experiment spec: tables of configs x models x seeds, each run a TrainConfig.

A spec is JSON (or TOML when the file ends in ``.toml``); see :mod:`mcgraph.experiment.runner`.
Everything is validated before anything runs: a typo found after an hour of training is an hour
lost.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import McGraphError, first_line
from ..rundir import read_result  # noqa: F401  (re-exported)
from ..train.config import TrainConfig

WHERE = "experiment"
REF = "run:"                      # "run:OTHER": a value taken from config OTHER's run
SET_BY_RUNNER = ("model", "seed", "out", "resume", "progress")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")   # becomes a directory name
_TABLE_KEYS = {"name", "title", "recipe", "models", "seeds", "configs", "compare", "notes",
               "figure_with"}


@dataclass(frozen=True)
class ConfigSpec:
    name: str
    options: Mapping[str, Any] = field(default_factory=dict)   # TrainConfig fields; may hold refs

    def refs(self) -> dict[str, str]:
        """{field: OTHER} for every ``"run:OTHER"`` value."""
        return {k: v[len(REF):] for k, v in self.options.items()
                if isinstance(v, str) and v.startswith(REF)}


@dataclass(frozen=True)
class TableSpec:
    name: str
    configs: tuple[ConfigSpec, ...]
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    recipe: Mapping[str, Any] = field(default_factory=dict)
    title: str = ""
    compare: tuple[tuple[str, str], ...] = ()
    notes: str = ""
    figure_with: tuple[str, ...] = ()      # tables drawn with this one (experiment/pareto.py)

    def config(self, name: str) -> ConfigSpec:
        return next(c for c in self.configs if c.name == name)

    def options(self, config: str) -> dict[str, Any]:
        """The config's TrainConfig fields: the recipe, overridden by the config's own keys."""
        return {**self.recipe, **self.config(config).options}


@dataclass(frozen=True)
class Spec:
    tables: tuple[TableSpec, ...]
    path: str = ""

    def with_seeds(self, n: int | None) -> Spec:
        """Every table with seeds 0..n-1 (None: as written)."""
        if n is None:
            return self
        if n < 1:
            raise McGraphError(WHERE, f"seeds must be >= 1, got {n}", "seeds")
        return Spec(tuple(_replace_seeds(t, tuple(range(n))) for t in self.tables), self.path)


    def with_tables(self, names: list[str] | None) -> Spec:
        """Only the tables named (None: all), in the spec's order."""
        if not names:
            return self
        known = [t.name for t in self.tables]
        bad = [n for n in names if n not in known]
        if bad:
            raise McGraphError(WHERE, f"no table {', '.join(map(repr, bad))} in "
                                      f"{self.path or 'the spec'}; it has {', '.join(known)}",
                               "table")
        return Spec(tuple(t for t in self.tables if t.name in names), self.path)


def _replace_seeds(t: TableSpec, seeds: tuple[int, ...]) -> TableSpec:
    return dataclasses.replace(t, seeds=seeds)


@dataclass(frozen=True)
class Run:
    """One training run: (table, config, model, seed) and its directory."""
    table: str
    config: str
    model: str
    seed: int
    dir: Path

    @property
    def label(self) -> str:
        return f"{self.table}/{self.config}/{run_name(self.model, self.seed)}"


def run_name(model: str, seed: int) -> str:
    """``resnet20-s0``; a checkpoint path as model contributes its file stem."""
    stem = Path(model).stem if model.endswith(".pt") else model
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', stem)}-s{seed}"


def run_dir(root: str | os.PathLike, table: str, config: str, model: str, seed: int) -> Path:
    return Path(root) / table / config / run_name(model, seed)


def runs(spec: Spec, root: str | os.PathLike, only: list[str] | None = None) -> list[Run]:
    """Every run in execution order: tables, configs, models, seeds (references run earlier).
    ``only`` keeps those configs plus what they reference, transitively."""
    keep = None if not only else _with_dependencies(spec, only)
    return [Run(t.name, c.name, m, s, run_dir(root, t.name, c.name, m, s))
            for t in spec.tables for c in t.configs
            if keep is None or (t.name, c.name) in keep
            for m in t.models for s in t.seeds]


def _with_dependencies(spec: Spec, only: list[str]) -> set[tuple[str, str]]:
    known = {c.name for t in spec.tables for c in t.configs}
    unknown = [o for o in only if o not in known]
    if unknown:
        raise McGraphError(WHERE, f"--only names no config of the spec: {', '.join(unknown)} "
                                  f"(configs: {', '.join(sorted(known))})", "only")
    keep: set[tuple[str, str]] = set()
    for t in spec.tables:
        todo = [c for c in only if any(x.name == c for x in t.configs)]
        while todo:
            name = todo.pop()
            if (t.name, name) not in keep:
                keep.add((t.name, name))
                todo.extend(t.config(name).refs().values())
    return keep


# ------------------------------------------------------------------ references
def ref_kind(field_name: str) -> str:
    """What ``"run:OTHER"`` means for a TrainConfig field: ``checkpoint`` (wiring_from: the
    path of OTHER's checkpoint) or ``blocks`` (an int field: OTHER's blocks kept)."""
    if field_name == "wiring_from":
        return "checkpoint"
    hint = typing.get_type_hints(TrainConfig).get(field_name)
    if hint is int or (typing.get_origin(hint) in (typing.Union, types.UnionType)
                       and int in typing.get_args(hint)):
        return "blocks"
    raise McGraphError(WHERE, f"'{REF}' references resolve only for wiring_from (a checkpoint) "
                              f"and integer fields (blocks kept), not for {field_name}")


def resolve_refs(options: Mapping[str, Any], other_dir: Callable[[str], Path],
                 label: str = "") -> dict[str, Any]:
    """``options`` with each ``"run:OTHER"`` replaced from OTHER's finished run:
    ``wiring_from`` -> the checkpoint its result describes (best.pt), an int field -> its
    ``blocks_kept``. ``other_dir(OTHER)`` is OTHER's run directory (same table, model, seed)."""
    out = dict(options)
    for key, value in options.items():
        if not (isinstance(value, str) and value.startswith(REF)):
            continue
        d = other_dir(value[len(REF):])
        result = read_result(d)
        if result is None:
            raise McGraphError(WHERE, f"{label or 'run'} needs {value[len(REF):]} finished first "
                                      f"({d / 'result.json'} does not exist)", key)
        if ref_kind(key) == "checkpoint":
            out[key] = str(d / result.get("checkpoint", "best.pt"))
        else:
            out[key] = int(result["blocks_kept"])
    return out


# ------------------------------------------------------------------ loading and validation
def load_spec(path: str | os.PathLike) -> Spec:
    """Read and validate a spec file (JSON, or TOML for ``*.toml``)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise McGraphError(WHERE, f"cannot read spec {path}: {first_line(e)}") from None
    except UnicodeDecodeError:
        raise McGraphError(WHERE, f"{path} is not a text file (a spec is JSON or TOML)") from None
    try:
        if path.suffix == ".toml":
            import tomllib  # Python 3.11+
            obj = tomllib.loads(text)
        else:
            obj = json.loads(text)
    except ImportError:
        raise McGraphError(WHERE, "TOML specs need Python 3.11 (tomllib); write the spec as "
                                  "JSON") from None
    except ValueError as e:
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise McGraphError(WHERE, f"{path} is not valid {kind}: {first_line(e)}") from None
    return parse_spec(obj, str(path))


def parse_spec(obj: Any, path: str = "") -> Spec:
    extra = sorted(set(obj) - {"tables"}) if isinstance(obj, dict) else []
    if extra:
        raise McGraphError(WHERE, f"unknown key(s) {', '.join(map(repr, extra))} at the top of the "
                                  "spec (allowed: 'tables')")
    if not isinstance(obj, dict) or set(obj) != {"tables"} or not isinstance(obj["tables"], list) \
            or not obj["tables"]:
        raise McGraphError(WHERE, "a spec is an object with one key, 'tables', a non-empty list")
    tables = tuple(_table(t, i) for i, t in enumerate(obj["tables"]))
    _unique([t.name for t in tables], "table")
    spec = Spec(tables, path)
    for t in tables:
        _validate_table(t)
    return spec


def _table(t: Any, i: int) -> TableSpec:
    if not isinstance(t, dict):
        raise McGraphError(WHERE, f"tables[{i}] must be an object")
    name = _name(t.get("name"), f"tables[{i}].name")
    where = f"table {name}"
    extra = set(t) - _TABLE_KEYS
    if extra:
        raise McGraphError(WHERE, f"{where}: unknown key(s) {', '.join(sorted(extra))} "
                                  f"(allowed: {', '.join(sorted(_TABLE_KEYS))})")
    recipe = _mapping(t.get("recipe", {}), f"{where}: recipe")
    models = t.get("models")
    if (not isinstance(models, list) or not models
            or not all(isinstance(m, str) and m for m in models)):
        raise McGraphError(WHERE, f"{where}: models must be a non-empty list of model names")
    seeds = t.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or \
            not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise McGraphError(WHERE, f"{where}: seeds must be a non-empty list of integers >= 0")
    configs = t.get("configs")
    if not isinstance(configs, list) or not configs:
        raise McGraphError(WHERE, f"{where}: configs must be a non-empty list")
    cs = []
    for j, c in enumerate(configs):
        if not isinstance(c, dict):
            raise McGraphError(WHERE, f"{where}: configs[{j}] must be an object")
        cname = _name(c.get("name"), f"{where}: configs[{j}].name")
        cs.append(ConfigSpec(cname, {k: v for k, v in c.items() if k != "name"}))
    compare = t.get("compare", [])
    if not isinstance(compare, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
            for p in compare):
        raise McGraphError(WHERE, f"{where}: compare must be a list of [A, B] config-name pairs")
    for key in ("title", "notes"):
        if not isinstance(t.get(key, ""), str):
            raise McGraphError(WHERE, f"{where}: {key} must be a string")
    _unique(models, f"{where}: model")
    _unique(seeds, f"{where}: seed")
    figure_with = t.get("figure_with", [])
    if not isinstance(figure_with, list) or not all(isinstance(x, str) for x in figure_with):
        raise McGraphError(WHERE, f"{where}: figure_with must be a list of table names")
    return TableSpec(name, tuple(cs), tuple(models), tuple(seeds), recipe, t.get("title", ""),
                     tuple((a, b) for a, b in compare), t.get("notes", ""), tuple(figure_with))


def _validate_table(t: TableSpec) -> None:
    """Known keys, earlier references, and a TrainConfig that builds for every config."""
    where = f"table {t.name}"
    _unique([c.name for c in t.configs], f"{where}: config")
    known = set(TrainConfig.__dataclass_fields__) - set(SET_BY_RUNNER)
    owners = [("recipe", t.recipe)] + [(f"config {c.name}", c.options) for c in t.configs]
    for owner, opts in owners:
        for key, value in opts.items():
            if key in SET_BY_RUNNER:
                raise McGraphError(WHERE, f"{where}, {owner}: '{key}' is set by the experiment "
                                          "(models, seeds, the run directory), not by the spec")
            if key not in known:
                raise McGraphError(WHERE, f"{where}, {owner}: unknown key '{key}' (not a "
                                          "TrainConfig field)")
            if owner == "recipe" and isinstance(value, str) and value.startswith(REF):
                raise McGraphError(WHERE, f"{where}, recipe: '{key}': '{REF}' references belong in "
                                          "a config")
    names = [c.name for c in t.configs]
    for i, c in enumerate(t.configs):
        for key, other in c.refs().items():
            if other not in names[:i]:
                later = "comes later" if other in names else "does not exist"
                raise McGraphError(WHERE, f"{where}, config {c.name}: '{key}' refers to "
                                          f"'{REF}{other}', which {later}; a referenced config "
                                          "must appear earlier in the list")
            ref_kind(key)
        dummy = {k: ("<checkpoint>" if ref_kind(k) == "checkpoint" else 1) for k in c.refs()}
        try:
            TrainConfig(model=t.models[0], seed=t.seeds[0], out="<validate>",
                        **{**t.options(c.name), **dummy})
        except McGraphError as e:   # the spec's own key names (freeze_at), not the CLI's flags
            raise McGraphError(WHERE, f"{where}, config {c.name}: {e}") from None
        except (TypeError, ValueError) as e:
            raise McGraphError(WHERE, f"{where}, config {c.name}: {first_line(e)}") from None
    for a, b in t.compare:
        for x in (a, b):
            if x not in names:
                raise McGraphError(WHERE,
                                   f"{where}: compare names '{x}', not a config of the table")


def _name(v: Any, where: str) -> str:
    if not isinstance(v, str) or not _NAME.match(v):
        raise McGraphError(WHERE, f"{where} must be a name of letters, digits, '_', '.', '-' "
                                  f"(it becomes a directory), got {v!r}")
    return v


def _mapping(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise McGraphError(WHERE, f"{where} must be an object")
    return dict(v)


def _unique(items: list, what: str) -> None:
    seen = set()
    for x in items:
        if x in seen:
            raise McGraphError(WHERE, f"{what} '{x}' appears twice")
        seen.add(x)


def check_dir_path(path: str | os.PathLike, what: str, is_dir: bool = True) -> Path:
    """``path`` as a Path, or a one-line error when it cannot be (or be inside) a directory:
    it exists as a file (``is_dir``) or as a directory (not ``is_dir``), or an existing
    ancestor is a file. Checked before hours of training, not after."""
    p = Path(path)
    if p.exists() and p.is_dir() != is_dir:
        raise McGraphError(WHERE, f"{what} {p} is {'not a directory' if is_dir else 'a directory'}")
    parent = next((a for a in p.parents if a.exists()), None)
    if parent is not None and not parent.is_dir():
        raise McGraphError(WHERE, f"{what} {p}: {parent} is not a directory")
    return p
