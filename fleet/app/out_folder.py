"""The ``--out`` check that ``fleet.run`` and ``fleet.sweep`` make before anything runs."""

from __future__ import annotations

import tempfile
from pathlib import Path

__all__ = ["OutFolderError", "check_out_folder"]


class OutFolderError(ValueError):
    """``--out`` cannot be used; the message names it and says why (a one-line error, exit status 2)."""


def check_out_folder(out: Path) -> None:
    """Make ``out`` if needed and prove it is a writable folder by writing (and removing) a file there."""
    if out.exists() and not out.is_dir():
        raise OutFolderError(f"--out {out}: not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise OutFolderError(f"--out {out}: not a writable folder ({exc.strerror or exc})") from None
