"""The ``mcgraph`` command line: options -> config dataclass -> library call, nothing more."""
from __future__ import annotations

import re
import sys

import click

from ..errors import Interrupted, McGraphError, first_line


def cli_message(e: McGraphError) -> str:
    """The library speaks Python (``freeze_at``, ``resume=True``); the CLI shows the flags."""
    msg = str(e)
    options = (e.option,) if isinstance(e.option, str) else (e.option or ())
    for opt in options:
        flag = "--" + opt.replace("_", "-")
        # the first mention is the option itself ("device 'cuda' asked for, but no CUDA device")
        msg = re.sub(rf"(?<![\w-]){re.escape(opt)}(=True)?(?![\w-])", flag, msg, count=1)
    return msg


class _Group(click.Group):
    """Every failure ends in one line on stderr and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Interrupted as e:          # state saved; conventional exit code of SIGINT
            click.echo(f"error: {cli_message(e)}", err=True)
            sys.exit(130)
        except McGraphError as e:
            click.echo(f"error: {cli_message(e)}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except (OSError, MemoryError) as e:
            click.echo(f"error: {type(e).__name__}: {e}", err=True)
            sys.exit(1)
        except RuntimeError as e:          # torch's allocators fail with a RuntimeError
            why = _out_of_memory(e)
            if why is None:
                raise
            click.echo(f"error: out of memory: {why}", err=True)
            sys.exit(1)


def _out_of_memory(e: RuntimeError) -> str | None:
    """The reason of an allocation failure (CPU or CUDA), else None."""
    text = first_line(e, 300)
    for mark in ("can't allocate memory: ", "out of memory. "):
        if mark in text:
            return text.split(mark, 1)[1]
    return text if "out of memory" in text.lower() else None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mcgraph")
def main() -> None:
    """Learn how the modules of a ResNet connect (MaskConnect), then compile it to a slim ONNX
    model.

    \b
    mcgraph rewrite resnet20 --in-channels 1 --input-size 28x28 --fan-in 2 -o m.pt
    mcgraph train m.pt --data fashion-mnist --out runs/r20
    mcgraph compile runs/r20/best.pt -o model.onnx
    """


def _register() -> None:
    from . import (  # noqa: F401
        bench_cmd,
        compile_cmd,
        demo_cmd,
        eval_cmd,
        experiment_cmd,
        inspect_cmd,
        rewrite_cmd,
        train_cmd,
    )


_register()
