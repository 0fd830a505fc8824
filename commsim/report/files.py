"""Writing output files atomically: a temporary file in the same folder, then ``os.replace``.

A report, a JSON file or a trace that fails half-way (a render that raises, a full disk,
Ctrl-C) never leaves a truncated file under the name the user gave, and an older file of
that name stays as it was until the new one is complete. Folders missing above the file
are created only once there is something to put in them.

- :func:`write_atomic`: text or bytes to a file;
- :func:`replacing`: a context manager yielding a temporary path that becomes the file
  when the block ends without an exception, for writers that want a path of their own
  (``result.to_chrome_trace(tmp)``);
- :class:`Staged`: several files moved into place together, once all of them are ready.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["Staged", "replacing", "write_atomic"]


def _existing_folder(path: Path) -> Path:
    """The folder of ``path`` if it exists, else its nearest existing ancestor (on the same
    file system as the folders to be created inside it, so ``os.replace`` stays a rename)."""
    folder = path.absolute().parent
    while folder != folder.parent:
        try:
            if folder.is_dir():
                break
        except OSError:     # a name too long: its parent may do
            pass
        folder = folder.parent
    return folder


def _mode(path: Path) -> int:
    """The permissions the file would get from a plain ``open(path, "w")``: those of the
    file it replaces, else 0o666 less the umask (``mkstemp`` makes 0o600 files)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _temporary(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp",
                                dir=_existing_folder(path))
    os.close(fd)
    return Path(name)


def _move(tmp: Path, path: Path) -> None:
    """``tmp`` becomes ``path`` (its missing folders created first), with ``path``'s
    permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(tmp, _mode(path))
    os.replace(tmp, path)


@contextlib.contextmanager
def replacing(path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends normally it replaces
    ``path`` (missing folders created), else it is removed and ``path`` is untouched."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        yield tmp
        _move(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path, data: str | bytes, encoding: str = "utf-8") -> Path:
    """Write ``data`` (text or bytes) to ``path`` atomically; returns ``path`` as a Path.
    Raises ``OSError`` as ``open`` would; nothing is left behind then."""
    path = Path(path)
    with replacing(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding=encoding)
    return path


class Staged:
    """Files written under temporary names and moved into place together by
    :meth:`commit`; leaving the ``with`` block without committing (an error half-way
    through a run) removes them, so a failed run writes none of its files::

        with Staged() as staged:
            for job in jobs:
                result(job).to_chrome_trace(staged.path(trace_file(job)))
            check(results)          # raises: no trace file is written
            staged.commit()
    """

    def __init__(self) -> None:
        self._moves: list[tuple[Path, Path]] = []

    def path(self, target) -> Path:
        """A temporary path to write ``target``'s content to."""
        target = Path(target)
        tmp = _temporary(target)
        self._moves.append((tmp, target))
        return tmp

    def commit(self) -> list[Path]:
        """Move every staged file into place, in the order staged; returns the targets."""
        done = []
        while self._moves:
            tmp, target = self._moves.pop(0)
            _move(tmp, target)
            done.append(target)
        return done

    def discard(self) -> None:
        """Remove the staged files that were not committed."""
        while self._moves:
            tmp, _ = self._moves.pop()
            tmp.unlink(missing_ok=True)

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()
