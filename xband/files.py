"""Writing files and folders atomically, with the permissions of ordinary new files.

Everything xband writes (reports, figures, ONNX files, statistics, the conversion cache) goes
through here: a file is written beside its final path and renamed into place, so a reader never
sees half of it, and a failure or an interrupt leaves nothing behind. Torch-free: the Keras
conversion process uses it too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from xband.errors import XbandError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode an ordinary new file gets under the current umask (mkstemp makes files private)."""
    return 0o666 & ~_umask()


def folder_mode() -> int:
    """The mode an ordinary new folder gets under the current umask."""
    return 0o777 & ~_umask()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block finishes it becomes `path`.

    On any exception (KeyboardInterrupt included) the temporary file is removed and `path` is
    left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the final suffix kept: some writers insist on theirs (Keras' .keras, NumPy's .npz)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                suffix=path.suffix or ".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))


def check_writable(out: str | os.PathLike) -> None:
    """Fail now, before any work, if the folder `out` cannot be written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise XbandError(f"{out}: exists and is not a folder. Choose another --out.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".check", dir=out.parent)
        os.rmdir(probe)
    except OSError as err:
        raise XbandError(
            f"{out}: cannot write the report there ({err.strerror}). Choose a writable --out."
        ) from None


@contextmanager
def atomic_folder(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `out` that replaces `out` only if the block finishes."""
    out = Path(out)
    check_writable(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    tmp.chmod(folder_mode())
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
