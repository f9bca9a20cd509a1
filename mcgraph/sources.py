"""Model sources: where the network to rewrite comes from, by the ecosystem's conventions.

A source is one string (what ``mcgraph rewrite MODEL`` and ``mcgraph train MODEL`` take, and what
a checkpoint records to rebuild the model) plus keyword arguments (``--model-arg key=value``):

=============================  ==========  ========================================================
``resnet20``                   registry    :func:`mcgraph.create_model` (10 classes, 3 channels)
``torchvision:resnet18``       torchvision ``torchvision.models.get_model(NAME, weights=None, ...)``
``timm:resnet18``              timm        ``timm.create_model(NAME, pretrained=False, ...)``
                                           (optional: ``pip install 'mcgraph[timm]'``)
``path/to/net.py:make``        file        ``make(**args)`` from that file (recorded absolute)
``package.module:make``        module      ``make(**args)`` from ``importlib.import_module``
=============================  ==========  ========================================================

Building a file or module source runs the user's code, so those two kinds are not
:attr:`ModelSource.trusted`: :func:`mcgraph.load` rebuilds them only when told to trust them.
``num_classes`` / ``in_channels`` adapt any source generically (:func:`adapt_io`: the first
``nn.Conv2d`` and the last ``nn.Linear`` are replaced when they differ); None keeps the source's
own (a registered name's defaults are 10 and 3).

    src = parse_source("nets/small.py:make", parse_model_args(["width=8", "act=relu"]))
    model, (h, w) = build_model(src, num_classes=7, in_channels=1)
    io_channels(model)      # (1, 7)
"""
from __future__ import annotations

import ast
import difflib
import hashlib
import importlib
import importlib.util
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Iterator

from torch import nn

from .errors import McGraphError, first_line

WHERE = "model"
KINDS = ("registry", "torchvision", "timm", "file", "module")
TRUSTED_KINDS = ("registry", "torchvision", "timm")
SPEC_HELP = ("a registered name, torchvision:NAME, timm:NAME, path/file.py:factory or "
             "package.module:factory")
TIMM_MISSING = "timm is not installed; pip install 'mcgraph[timm]'"
DEFAULT_SIZE = {"torchvision": (224, 224), "timm": (224, 224), "file": (32, 32), "module": (32, 32)}
_PLAIN = (type(None), bool, int, float, str)
# constructor arguments of torchvision / timm that read files or download weights
_LOADING_ARGS = {"weights", "pretrained", "checkpoint_path", "pretrained_cfg",
                 "pretrained_cfg_overlay", "cache_dir", "weights_backbone"}


@dataclass(frozen=True)
class ModelSource:
    """A parsed model source; ``spec`` is what a checkpoint records (a file path made absolute)."""

    spec: str
    kind: str                   # registry | torchvision | timm | file | module
    name: str                   # registered / torchvision / timm name, file path or module name
    factory: str | None = None  # file and module sources: the callable that builds the model
    args: dict[str, Any] = field(default_factory=dict)   # factory / constructor keyword arguments

    @property
    def trusted(self) -> bool:
        """False for file and module sources: building them runs the user's code."""
        return self.kind in TRUSTED_KINDS


def parse_model_args(items: Iterable[str]) -> dict[str, Any]:
    """``["depth=20", "widths=(16,32)", "act=relu"]`` -> ``{"depth": 20, "widths": (16, 32),
    "act": "relu"}``: each value read by :func:`ast.literal_eval`, else kept as the plain string."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise McGraphError(WHERE, f"model argument '{item}' is not key=value with a Python "
                                      f"identifier as key (e.g. depth=20)")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            value = text
        out[key] = value
    check_args(out)
    return out


def check_args(args: dict[str, Any]) -> dict[str, Any]:
    """Arguments a checkpoint can record: identifier keys; None, bool, int, float, str and lists,
    tuples and str-keyed dicts of them as values."""
    if not isinstance(args, dict):
        raise McGraphError(WHERE, f"model arguments must be a dict, got {type(args).__name__}")

    def plain(v: Any) -> bool:
        if isinstance(v, (list, tuple)):
            return all(plain(x) for x in v)
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        return isinstance(v, _PLAIN)

    for k, v in args.items():
        if not isinstance(k, str) or not k.isidentifier():
            raise McGraphError(WHERE, f"model argument name {k!r} is not a Python identifier")
        if not plain(v):
            raise McGraphError(WHERE, f"model argument {k}={v!r}: values must be numbers, strings, "
                                      f"booleans, None, or lists/tuples/dicts of them")
    return args


def parse_source(spec: str, args: dict[str, Any] | None = None) -> ModelSource:
    """Read a source string (see the module docstring); a bare name must be registered."""
    args = check_args(dict(args or {}))
    spec = str(spec).strip()
    if not spec:
        raise McGraphError(WHERE, f"no model given; expected {SPEC_HELP}")
    for kind in ("torchvision", "timm"):
        if spec.startswith(kind + ":"):
            name = spec[len(kind) + 1:].strip()
            if not name:
                raise McGraphError(WHERE, f"'{spec}' names no {kind} model (e.g. {kind}:resnet18)")
            return ModelSource(f"{kind}:{name}", kind, name, None, args)
    left, colon, factory = spec.rpartition(":")
    if not colon:
        if spec.endswith(".py") or os.sep in spec or "/" in spec:
            raise McGraphError(WHERE, f"'{spec}': a file source names its factory, "
                                      f"e.g. {spec}:make")
        from .models import model_info
        model_info(spec)                     # unknown name: the registry's own message
        return ModelSource(spec, "registry", spec, None, args)
    factory = factory.strip()
    if not factory.isidentifier():
        raise McGraphError(WHERE, f"'{spec}': '{factory}' after the ':' is not a factory name; "
                                  f"expected {SPEC_HELP}")
    if left.endswith(".py") or os.sep in left or "/" in left:
        path = os.path.abspath(os.path.expanduser(left))
        return ModelSource(f"{path}:{factory}", "file", path, factory, args)
    if left and all(p.isidentifier() for p in left.split(".")):
        return ModelSource(f"{left}:{factory}", "module", left, factory, args)
    raise McGraphError(WHERE, f"'{spec}' is not a model source; expected {SPEC_HELP}")


def same_source(given: str | None, recorded: str | None) -> bool:
    """True when ``given`` (what a user typed) parses to the source ``recorded`` in a checkpoint."""
    if not given or not recorded:
        return False
    try:
        return parse_source(given).spec == recorded
    except McGraphError:
        return False


def build_model(src: ModelSource, num_classes: int | None = None, in_channels: int | None = None,
                weights: str | os.PathLike | None = None) -> tuple[nn.Module, tuple[int, int]]:
    """Build ``src`` (random init), adapt its stem and head (:func:`adapt_io`) where asked, load
    ``weights`` (a local state_dict) if given. Returns the model and its default input (H, W)."""
    for flag, v in (("num_classes", num_classes), ("in_channels", in_channels)):
        if v is not None and (not isinstance(v, int) or v < 1):
            raise McGraphError(WHERE, f"{flag} must be an integer >= 1, got {v!r}", flag)
    args = dict(src.args)
    loading = sorted(set(args) & _LOADING_ARGS) if src.kind in ("torchvision", "timm") else []
    if loading:    # a checkpoint could otherwise make a "trusted" constructor read any file
        raise McGraphError(WHERE, f"model argument {loading[0]} loads weights or files; mcgraph "
                                  f"builds {src.spec} with random init (--weights FILE loads a "
                                  "local state_dict)")
    if src.kind == "registry":
        from .models import create_model, model_info
        info = model_info(src.name)
        num_classes, in_channels = num_classes or 10, in_channels or 3
        try:
            model = create_model(src.name, num_classes=num_classes, in_channels=in_channels, **args)
        except TypeError as e:
            raise McGraphError(WHERE, f"{src.name} does not take the arguments "
                                      f"{sorted(args)}: {first_line(e)}") from None
        size = tuple(info.input_size)
    elif src.kind == "torchvision":
        model = _torchvision(src, args, num_classes)
        size = DEFAULT_SIZE["torchvision"]
    elif src.kind == "timm":
        model = _timm(src, args, num_classes, in_channels)
        size = _cfg_input_size(model) or DEFAULT_SIZE["timm"]
    elif src.kind in ("file", "module"):
        model = _from_factory(src, args)
        size = _cfg_input_size(model) or DEFAULT_SIZE[src.kind]
    else:
        raise McGraphError(WHERE, f"unknown source kind '{src.kind}'; known: {', '.join(KINDS)}")
    if src.kind in ("file", "module"):
        model = adapt_io(model, in_channels, num_classes, WHERE)
    else:   # the constructor took num_classes (and, but for torchvision, in_channels): adapt
        conv, linear = io_channels(model)   # what is still different, where there is a layer
        model = adapt_io(model, in_channels if src.kind == "torchvision" or conv is not None
                         else None, num_classes if linear is not None else None, WHERE)
    if weights is not None:
        from .models import _load_weights
        _load_weights(model, Path(weights), src.name if src.kind == "registry" else src.spec)
    return model, (int(size[0]), int(size[1]))


def _torchvision(src: ModelSource, args: dict[str, Any], num_classes: int | None) -> nn.Module:
    import torchvision.models as tvm
    known = tvm.list_models(module=tvm)
    if src.name not in known:
        raise McGraphError(WHERE, f"unknown torchvision classification model '{src.name}'"
                                  f"{_close(src.name, known)}")
    if num_classes is not None:
        args["num_classes"] = num_classes
    return _call(lambda: tvm.get_model(src.name, weights=None, **args), src, "get_model")


def _timm(src: ModelSource, args: dict[str, Any], num_classes: int | None,
          in_channels: int | None) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise McGraphError(WHERE, TIMM_MISSING) from None
    if not timm.is_model(src.name):
        raise McGraphError(WHERE, f"unknown timm model '{src.name}'"
                                  f"{_close(src.name, timm.list_models())}")
    if num_classes is not None:
        args["num_classes"] = num_classes
    if in_channels is not None:
        args["in_chans"] = in_channels
    return _call(lambda: timm.create_model(src.name, pretrained=False, **args), src, "create_model")


def _close(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else f"; known: {len(known)} models"


def _cfg_input_size(model: nn.Module) -> tuple[int, int] | None:
    """(H, W) of a timm-style ``pretrained_cfg`` / ``default_cfg`` ``input_size`` (C, H, W)."""
    for attr in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, attr, None)
        size = cfg.get("input_size") if isinstance(cfg, dict) else None
        if isinstance(size, (tuple, list)) and len(size) >= 2:
            return int(size[-2]), int(size[-1])
    return None


@contextmanager
def _on_path(folder: str) -> Iterator[None]:
    """``folder`` first on sys.path while the user's code imports and runs (its own imports)."""
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)


def _import_file(path: str) -> ModuleType:
    p = Path(path)
    if not p.is_file():
        raise McGraphError(WHERE, f"{path} does not exist" if not p.exists()
                           else f"{path} is not a file")
    stem = "".join(c if c.isalnum() else "_" for c in p.stem)
    name = f"mcgraph_source_{stem}_{hashlib.sha1(str(p).encode()).hexdigest()[:10]}"
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise McGraphError(WHERE, f"{path} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module            # dataclasses, pickling and fx look classes up there
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        sys.modules.pop(name, None)
        if isinstance(e, KeyboardInterrupt):    # a user's sys.exit() at import is a failure
            raise
        raise McGraphError(WHERE, f"importing {path} failed: "
                                  f"{type(e).__name__}: {first_line(e)}") from None
    return module


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        raise McGraphError(WHERE, f"cannot import module '{name}' ({first_line(e)})") from None
    except (Exception, SystemExit) as e:
        raise McGraphError(WHERE, f"importing module '{name}' failed: {type(e).__name__}: "
                                  f"{first_line(e)}") from None


def _from_factory(src: ModelSource, args: dict[str, Any]) -> nn.Module:
    folder = os.path.dirname(src.name) if src.kind == "file" else os.getcwd()
    with _on_path(folder):
        module = _import_file(src.name) if src.kind == "file" else _import_module(src.name)
        fn = getattr(module, str(src.factory), None)
        if not callable(fn):
            have = sorted(n for n, v in vars(module).items()
                          if callable(v) and not n.startswith("_")
                          and getattr(v, "__module__", None) == module.__name__)
            what = "is not callable" if fn is not None else "is not defined"
            raise McGraphError(WHERE, f"{src.spec}: '{src.factory}' {what} in {src.name}; its "
                                      f"callables: {', '.join(have) or 'none'}")
        model = _call(lambda: fn(**args), src, str(src.factory))
    if not isinstance(model, nn.Module):
        raise McGraphError(WHERE, f"{src.spec}: {src.factory}() returned {type(model).__name__}, "
                                  f"not a torch.nn.Module")
    return model


def _call(make: Callable[[], Any], src: ModelSource, what: str) -> Any:
    try:
        return make()
    except McGraphError:
        raise
    except (Exception, SystemExit) as e:       # a factory's sys.exit() too: one line, no exit
        raise McGraphError(WHERE, f"{src.spec}: {what}({_fmt_args(src.args)}) raised "
                                  f"{type(e).__name__}: {first_line(e)}") from None


def _fmt_args(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items())


def _first(model: nn.Module, kind: type, last: bool = False) -> tuple[str, Any] | None:
    """The first (last) ``kind`` layer the forward calls: in graph order when torch.fx traces
    the model (a head defined before the stem in ``__init__`` is still the head), else in
    module order."""
    mods = dict(model.named_modules())
    try:
        from torch import fx
        order = [str(n.target) for n in fx.Tracer().trace(model).nodes if n.op == "call_module"]
    except Exception:  # untraceable here: registration order is the best guess
        order = list(mods)
    found = [(n, mods[n]) for n in order if isinstance(mods.get(n), kind)]
    return (found[-1] if last else found[0]) if found else None


def io_channels(model: nn.Module) -> tuple[int | None, int | None]:
    """(in_channels of the first ``nn.Conv2d``, out_features of the last ``nn.Linear``) the
    forward calls (:func:`_first`); None where the model has none."""
    conv, linear = _first(model, nn.Conv2d), _first(model, nn.Linear, last=True)
    return (conv[1].in_channels if conv else None, linear[1].out_features if linear else None)


def _replace(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    if not name:
        return new
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
    return model


def adapt_io(model: nn.Module, in_channels: int | None, num_classes: int | None,
             where: str = WHERE) -> nn.Module:
    """Give ``model`` ``in_channels`` input channels (a new first ``nn.Conv2d``, same
    out_channels, kernel, stride, padding, dilation, bias, padding mode) and ``num_classes``
    outputs (a new last ``nn.Linear``), each only when asked for and different from what it has.
    The new layers are freshly initialized; the model is changed in place and returned."""
    if in_channels is not None:
        found = _first(model, nn.Conv2d)
        if found is None:
            raise McGraphError(where, f"{type(model).__name__} has no nn.Conv2d to give "
                                      f"in_channels={in_channels}")
        name, old = found
        if old.in_channels != in_channels:
            if old.groups != 1:
                raise McGraphError(where, f"the first convolution {name or '(model)'} is grouped "
                                          f"(groups={old.groups}); cannot change its in_channels")
            new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                            old.dilation, 1, old.bias is not None, old.padding_mode,
                            device=old.weight.device, dtype=old.weight.dtype)
            model = _replace(model, name, new)
    if num_classes is not None:
        found = _first(model, nn.Linear, last=True)
        if found is None:
            raise McGraphError(where, f"{type(model).__name__} has no nn.Linear head to give "
                                      f"num_classes={num_classes}")
        name, old = found
        if old.out_features != num_classes:
            new = nn.Linear(old.in_features, num_classes, old.bias is not None,
                            device=old.weight.device, dtype=old.weight.dtype)
            model = _replace(model, name, new)
    return model


def describe(src: ModelSource) -> str:
    """One line for messages: ``file /abs/net.py:make (width=8)``."""
    extra = f" ({_fmt_args(src.args)})" if src.args else ""
    return f"{src.kind} {src.spec}{extra}"


__all__ = ["ModelSource", "SPEC_HELP", "adapt_io", "build_model", "check_args", "describe",
           "io_channels", "parse_model_args", "parse_source", "same_source"]
