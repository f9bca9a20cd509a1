"""One atomic-write helper: write to a temp file beside the target, fsync, then rename.

An interrupted write never leaves a half-written checkpoint, ONNX file or report behind.

    with atomic_path("model.onnx") as tmp:
        program.save(str(tmp))          # `model.onnx` appears only if this block succeeds
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import McGraphError


def check_out_path(path: str | os.PathLike, where: str) -> Path:
    """``path`` as a Path, or a one-line error when its directory does not exist."""
    path = Path(path)
    if not path.parent.is_dir():
        raise McGraphError(where, f"output directory {path.parent} does not exist")
    return path


@contextmanager
def atomic_path(path: str | os.PathLike, where: str = "write") -> Iterator[Path]:
    """Yield a temp path in ``path``'s directory; on success fsync it and rename it to ``path``."""
    path = check_out_path(path, where)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)           # mkstemp makes 0600; outputs follow the umask
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str, where: str = "write") -> Path:
    with atomic_path(path, where) as tmp:
        tmp.write_text(text)
    return Path(path)
