"""Writing local files without following links planted at their names.

A shared folder (a storage root, the folder a report or an export goes to) may hold
a symbolic link another user planted where a file is about to be written; opening
that name for writing would overwrite the link's target. Files here are written
under a fresh temporary name (created exclusively) and then linked into place
(refused if the name exists) or renamed over it (``overwrite``): the name is
replaced, never followed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_file(path: str | os.PathLike, data: bytes | str, *, overwrite: bool = False,
               mode: int = 0o666) -> Path:
    """Write ``data`` to ``path``; an existing name raises ``FileExistsError`` unless ``overwrite``.

    With ``overwrite`` an existing file or link at ``path`` is replaced (its target is
    left alone). The file gets ``mode`` less the umask.
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode & ~_umask())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path, follow_symlinks=False)  # fails if the name exists, even as a link
            os.unlink(tmp)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    return path


def create_exclusive(path: str | os.PathLike, data: bytes = b"") -> None:
    """Create a new file at ``path`` (never an existing one, never through a link)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
