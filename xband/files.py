"""Writing files and folders atomically, with the permissions of ordinary new files, and only
ever replacing a folder that xband wrote itself.

Everything xband writes (reports, figures, ONNX files, statistics, the conversion cache) goes
through here: a file is written beside its final path and renamed into place, so a reader never
sees half of it, and a failure or an interrupt leaves nothing behind. A report folder is written
whole beside its final place and swapped in with interrupts held back; it carries a list of the
files in it (`MANIFEST`), and a folder is replaced only when it holds nothing but those files.
A folder without that list is the user's, whatever it holds.
Torch-free: the Keras conversion process uses it too.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from converters.files import (
    atomic_path,
    file_mode,
    folder_mode,
    interrupts_held,
    write_bytes,
    write_text,
)
from xband.errors import XbandError, option

__all__ = ["MANIFEST", "atomic_folder", "atomic_path", "check_output_folder", "file_mode",
           "folder_mode", "interrupts_held", "write_bytes", "write_text"]

MANIFEST = "written-by-xband.json"  # what an xband report folder holds, written last


_OUT = option("out", "--out")


def check_writable(out: str | os.PathLike) -> Path:
    """`out` as an absolute path; fails now, before any work, if no folder can be made there."""
    if not str(out).strip():
        raise XbandError(f"{_OUT} is empty: name the folder for the report, e.g. "
                         + option("out='report'", "--out report") + ".")
    given = Path(out).expanduser()
    if given.is_symlink():
        raise XbandError(f"{_OUT} {out}: is a symbolic link (to {os.readlink(given)}), and xband "
                         "replaces its report folder as a whole: the files where it points would "
                         f"be deleted. Name a real folder as {_OUT}.")
    out = given.resolve()
    if out.exists() and not out.is_dir():
        raise XbandError(f"{out}: exists and is not a folder. Choose another {_OUT}.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".check", dir=out.parent)
        os.rmdir(probe)
    except OSError as err:
        raise XbandError(
            f"{out}: cannot write the report there ({err.strerror}). Choose a writable {_OUT}."
        ) from None
    return out


def check_regular(inputs: Mapping[str, str | os.PathLike]) -> None:
    """Every input ({flag or argument: path}) is a file or a folder: a pipe, socket or device
    would block a reader, or change under it, so it is refused now."""
    for flag, path in inputs.items():
        if os.path.exists(path) and not (os.path.isfile(path) or os.path.isdir(path)):
            raise XbandError(f"{flag} {path}: is not a file or a folder (a pipe, socket or "
                             "device?); xband reads its inputs from files. Save the data to a "
                             "file first.")


def check_file_writable(path: str | os.PathLike, name: str) -> None:
    """Fail now if the file `path` could not be created or replaced later (nothing is made)."""
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        raise XbandError(f"{name} {path}: is a folder; give a file name.")
    existing = path.parent
    while not existing.exists():
        existing = existing.parent
    try:  # a probe file where the first missing folder would be made, removed at once
        fd, probe = tempfile.mkstemp(prefix=".xband-probe.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise XbandError(f"{name} {path}: cannot be created ({existing}: {err.strerror}). "
                         "Choose a writable place.") from None


def _files_below(folder: Path) -> list[str]:
    """Every file (and link) below `folder`, as relative POSIX paths; empty folders hold none."""
    found = []
    for root, dirs, files in os.walk(folder):
        base = Path(root).relative_to(folder)
        found += [(base / f).as_posix() for f in files]
        found += [(base / d).as_posix() for d in dirs if (Path(root) / d).is_symlink()]
    return sorted(found)


def _listed(folder: Path) -> set[str] | None:
    """The files `folder`'s manifest lists; None without one (the folder is not xband's)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if manifest.get("written_by") != "xband" or not isinstance(files, list):
        return None
    return {str(f) for f in files} | {MANIFEST}


def foreign_files(folder: str | os.PathLike) -> list[str]:
    """Files in `folder` that xband did not write there ([] for a missing or empty folder, or a
    report folder xband wrote and nobody added to)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    present = _files_below(folder)
    listed = _listed(folder) if present else set()
    return [f for f in present if listed is None or f not in listed]


def _overlap(out: Path, inputs: Mapping[str, str | os.PathLike | None]) -> str | None:
    """How `out` meets an existing input ('is --data x', 'holds …', 'lies inside …'), or None."""
    for flag, path in inputs.items():
        if path is None or not str(path).strip() or not os.path.exists(path):
            continue
        given = Path(path).expanduser().resolve()
        relation = ("is" if given == out else "holds" if out in given.parents
                    else "lies inside" if given in out.parents else None)
        if relation:
            return f"{relation} {flag} {path}"
    return None


def check_output_folder(out: str | os.PathLike, *, overwrite: bool = False,
                        inputs: Mapping[str, str | os.PathLike | None] | None = None) -> Path:
    """`out` as an absolute path once it is safe to replace with a report; fails now otherwise.

    Refused: a path that cannot be written; the current folder or one holding it; a folder that
    is, holds or lies inside one of `inputs` ({flag or argument: path}: the data, the model);
    a folder holding files xband did not write, unless `overwrite`.
    """
    path = check_writable(out)
    here = Path.cwd().resolve()
    if path == here or path in here.parents:
        raise XbandError(f"{_OUT} {out}: is or holds the current folder, and xband replaces its "
                         "report folder as a whole. Name a new folder, e.g. "
                         + option("out='report'", "--out report") + ".")
    clash = _overlap(path, inputs or {})
    if clash:
        raise XbandError(f"{_OUT} {out}: {clash}, and xband replaces its report folder as a "
                         "whole. Choose a folder apart from your inputs.")
    _check_replaceable(path, out)
    foreign = foreign_files(path)
    if foreign and not overwrite:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3
                                          else "")
        raise XbandError(f"{_OUT} {out}: holds files xband did not write ({shown}); choose an "
                         "empty or new folder, or pass " + option("overwrite=True", "--overwrite")
                         + " to replace it and everything in it.")
    return path


def _check_replaceable(path: Path, out: str | os.PathLike) -> None:
    """An existing `path` can be moved aside and deleted: it and every folder in it writable."""
    if not path.is_dir():
        return
    for root, _, _ in os.walk(path):
        if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
            raise XbandError(f"{_OUT} {out}: cannot be replaced, {root} is read-only (an earlier "
                             "report whose permissions were changed?). Make it readable and writable "
                             f"(chmod -R u+w {path}) or choose another {_OUT}.")


def _write_manifest(folder: Path) -> None:
    files = _files_below(folder)
    (folder / MANIFEST).write_text(json.dumps({"written_by": "xband", "files": files}, indent=1))
    os.chmod(folder / MANIFEST, file_mode())


@contextmanager
def atomic_folder(out: str | os.PathLike, *, overwrite: bool = False,
                  inputs: Mapping[str, str | os.PathLike | None] | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside `out` that replaces `out` only if the block finishes.

    `out` is checked by `check_output_folder` (with `overwrite` and `inputs`) before the block
    and again before the swap; the finished folder lists its files in
    `MANIFEST`, written last.
    """
    def checked() -> Path:
        return check_output_folder(out, overwrite=overwrite, inputs=inputs)

    path = checked()
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        tmp.chmod(folder_mode())
        yield tmp
        _write_manifest(tmp)
        checked()
        with interrupts_held():
            _swap(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap(tmp: Path, out: Path) -> None:
    """`tmp` renamed to `out`; an old `out` moved aside first and removed after."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    try:
        os.replace(out, old / out.name)
        try:
            os.replace(tmp, out)
        except OSError:
            os.replace(old / out.name, out)
            raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
