"""One atomic-write helper: write to a temp file beside the target, fsync, then rename.

An interrupted write never leaves a half-written checkpoint, ONNX file or report behind; a
failed one (full disk, read-only directory) is a one-line McGraphError and leaves the target
as it was. Temp files are named ``.NAME.*.tmp``: a killed writer may leave one, which nothing
reads (:func:`remove_stale_temps` clears them).

    with atomic_path("model.onnx") as tmp:
        program.save(str(tmp))          # `model.onnx` appears only if this block succeeds

For fault-injection tests, ``MCGRAPH_TEST_SLOW_WRITE=SECONDS[:NAME]`` makes each write (of
files named NAME) wait SECONDS between its complete, fsynced temp file and the rename.
"""
from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from .errors import McGraphError

SLOW_WRITE = "MCGRAPH_TEST_SLOW_WRITE"


def check_out_path(path: str | os.PathLike, where: str) -> Path:
    """``path`` as a Path, or a one-line error when its directory does not exist."""
    path = Path(path)
    if not path.parent.is_dir():
        raise McGraphError(where, f"output directory {path.parent} does not exist")
    return path


def _cannot_write(path: Path, e: OSError, where: str) -> McGraphError:
    return McGraphError(where, f"cannot write {path}: {e.strerror or e} (the file there, if any, "
                               "is unchanged)")


@contextmanager
def atomic_path(path: str | os.PathLike, where: str = "write") -> Iterator[Path]:
    """Yield a temp path in ``path``'s directory; on success fsync it and rename it to ``path``.
    An OSError on the way (ENOSPC, EROFS, EACCES) becomes a one-line McGraphError."""
    path = check_out_path(path, where)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _cannot_write(path, e, where) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)           # mkstemp makes 0600; outputs follow the umask
        _slow_write_for_tests(path)
        os.replace(tmp, path)
    except OSError as e:
        raise _cannot_write(path, e, where) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:                         # a read-only directory: nothing was written
            pass


def _slow_write_for_tests(path: Path) -> None:
    value = os.environ.get(SLOW_WRITE)
    if not value:
        return
    seconds, _, name = value.partition(":")
    if not name or name == path.name:
        time.sleep(float(seconds))


def write_text_atomic(path: str | os.PathLike, text: str, where: str = "write") -> Path:
    with atomic_path(path, where) as tmp:
        tmp.write_text(text)
    return Path(path)


def append_text(path: str | os.PathLike, text: str, where: str = "write") -> None:
    """Append ``text`` (a log line); an OSError becomes a one-line McGraphError."""
    try:
        with open(path, "a") as f:
            f.write(text)
    except OSError as e:
        raise McGraphError(where, f"cannot write {path}: {e.strerror or e}") from None


def remove_stale_temps(directory: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Delete the temp files a killed writer of ``names`` left in ``directory``."""
    gone = []
    for name in names:
        for p in Path(directory).glob(f".{name}.*.tmp"):
            try:
                p.unlink()
                gone.append(p)
            except OSError:
                pass
    return gone
