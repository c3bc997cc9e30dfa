"""The ``--out`` argument (``out_path``) and the check that ``fleet.run`` and ``fleet.sweep`` make of it before
anything runs, the clean-up of a folder a run made and left empty (``check_out_folder``'s result and
``remove_if_empty``, or both in ``out_folder``), an earlier run's outputs removed before a run writes its own
(``clear_outputs``), and whether a run left learning checkpoints to resume from (``holds_checkpoints``)."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

__all__ = ["OutFolderError", "check_out_folder", "clear_outputs", "holds_checkpoints", "make_writable", "out_folder",
           "out_path", "remove_if_empty"]


class OutFolderError(ValueError):
    """``--out`` cannot be used; the message names it and says why (a one-line error, exit status 2)."""


def out_path(text: str) -> Path:
    """An ``--out`` argument as a Path (argparse's ``type``): an empty or blank one is refused, as ``Path("")`` is
    the working directory, where a run's files would land among the user's own."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: an empty path (use '.' for the working directory)")
    return Path(text)


def check_out_folder(out: Path, name: str = "--out") -> Path | None:
    """Make ``out`` if needed and prove it is a writable folder by writing (and removing) a file there. Returns
    the topmost folder this made (``out`` or a missing folder above it), None when ``out`` existed: what
    ``remove_if_empty`` takes when the run fails. Else ``OutFolderError``, one line naming ``name`` (the
    option or argument) and ``out``, and saying why; a folder made before the check failed is removed."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutFolderError(f"{name} {out}: not a directory")
    try:
        return make_writable(out)
    except OSError as exc:
        raise OutFolderError(f"{name} {out}: not a writable folder ({exc.strerror or exc})") from None


def make_writable(folder: Path) -> Path | None:
    """Make ``folder`` if needed and prove it writable by writing (and removing) a file there; the topmost
    folder this made (None: it existed). ``OSError`` when it cannot be, after removing what this made."""
    made = _topmost_missing(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        remove_if_empty(made)
        raise
    return made


def _topmost_missing(out: Path) -> Path | None:
    """The highest of ``out`` and the folders above it that does not exist (what ``mkdir(parents=True)``
    makes first), None when ``out`` exists."""
    missing = None
    for folder in (out, *out.parents):
        if folder.exists() or folder.is_symlink():
            break
        missing = folder
    return missing


#: What a learning run writes into ``checkpoints/`` before its first checkpoint: the scenario's fingerprint, which
#: guards checkpoints that are not there yet. Alone, it is no output (``remove_if_empty``).
CHECKPOINT_STAMP = "scenario.sha256"


def remove_if_empty(folder: Path | None) -> bool:
    """Remove ``folder`` when nothing but empty folders is under it (a run that failed before writing a file;
    a ``checkpoints`` folder holding only its ``CHECKPOINT_STAMP`` counts as empty); leave it, and everything in
    it, as it is otherwise. ``folder`` None or gone is nothing to do. Returns whether it was removed."""
    if folder is None or not folder.is_dir() or folder.is_symlink():
        return False
    empty, stamps = [], []
    for path, folders, files in os.walk(folder):  # top down: a finished run's files are found at once
        if Path(path).name == "checkpoints" and files == [CHECKPOINT_STAMP] and not folders:
            stamps.append(Path(path, CHECKPOINT_STAMP))
        elif files or any(Path(path, f).is_symlink() for f in folders):
            return False
        empty.append(path)
    try:
        for stamp in stamps:
            stamp.unlink()
        for path in reversed(empty):  # deepest first
            os.rmdir(path)
    except OSError:  # written to meanwhile, or not ours to remove: left as it is
        return False
    return True


@contextmanager
def out_folder(out: Path, name: str = "--out") -> Iterator[Path]:
    """``check_out_folder(out, name)``, then the body; when the body raises (any exception, Ctrl-C included)
    and this made the folder, it is removed if still empty (``remove_if_empty``). A folder that existed, or
    that holds a file, is left as it is."""
    made = check_out_folder(out, name)
    try:
        yield Path(out)
    except BaseException:
        remove_if_empty(made)
        raise


def holds_checkpoints(folder: Path) -> bool:
    """Whether a learning run left, anywhere under ``folder`` (a variant's folder included), a checkpoint of an
    aggregated round (``fleet.learning.checkpoints``' ``checkpoints/version_NNNNNN.ckpt``) that
    ``fleet.run --resume`` can continue from."""
    return next(Path(folder).glob("**/checkpoints/version_*.ckpt"), None) is not None


def clear_outputs(out: Path, patterns: Sequence[str]) -> None:
    """Remove the files under ``out`` matching ``patterns`` (``Path.glob`` patterns of our own output names), and
    a folder of them left empty; nothing else."""
    folders = set()
    for pattern in patterns:
        for path in out.glob(pattern):
            if path.is_file() or path.is_symlink():
                path.unlink()
                folders.add(path.parent)
    for folder in folders - {out}:
        remove_if_empty(folder)
