"""A sweep's results file: JSON lines, one row a scenario, found again by its key.

:class:`Results` reads the rows already there, so a sweep resumes where it stopped (a last
line cut short by a kill is dropped), refuses a file of another study, and appends rows one
line at a time, flushed, under a lock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from commsim.errors import CommsimError

if TYPE_CHECKING:
    from commsim.plan.study import Study


class Results:
    """A sweep's JSON-lines file: the rows already there (by key), and appending new ones
    one line at a time, flushed, so an interrupted sweep keeps what it finished."""

    def __init__(self, path: str, study: Study) -> None:
        self.path = path
        self.study = study
        self.rows: dict[str, dict] = {}
        self.dropped_tail = False
        self._fh = None

    def read(self) -> dict[str, dict]:
        """The rows of the file keyed by scenario key; refuses a file of another study.
        A last line cut short (a sweep killed while writing it: no newline, not JSON, but
        the start of one of this study's rows) is dropped from the file."""
        p = Path(self.path)
        if not p.exists():
            return self.rows
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise CommsimError(f"--out: cannot read {self.path!r}: {exc.strerror or exc}") \
                from None
        lines = data.splitlines(keepends=True)
        keep = len(data)
        ours = json.dumps({"study": self.study.name})[:-1].encode()
        offset = 0
        for i, raw in enumerate(lines):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
                if not isinstance(row, dict):
                    raise ValueError
            except ValueError:
                if i == len(lines) - 1 and not raw.endswith(b"\n") and raw.startswith(ours):
                    self.dropped_tail = True   # cut short while being written
                    keep = start
                    break
                raise CommsimError(f"--out: {self.path!r} line {i + 1} is not a sweep row "
                                   "(JSON); give another --out, or repair the file") from None
            study, kind = row.get("study"), row.get("kind")
            if study != self.study.name or kind != self.study.kind or "key" not in row:
                what = (f"rows of study {study!r} ({kind})" if study is not None else
                        "rows that are not sweep results")
                raise CommsimError(
                    f"--out: {self.path!r} holds {what}, not of study {self.study.name!r} "
                    f"({self.study.kind}); give another --out, or delete the file to start "
                    "over")
            self.rows.setdefault(row["key"], row)
        if self.dropped_tail or (data and not data.endswith(b"\n")):
            self._repair(data[:keep])
        return self.rows

    def _repair(self, keep: bytes) -> None:
        if keep and not keep.endswith(b"\n"):
            keep += b"\n"
        try:
            with open(self.path, "wb") as fh:
                fh.write(keep)
        except OSError as exc:
            raise CommsimError(f"--out: cannot rewrite {self.path!r}: "
                               f"{exc.strerror or exc}") from None

    def open(self) -> None:
        """Open the file for appending and lock it (POSIX ``flock``): a second sweep on
        the same file is refused instead of interleaving its lines with this one's.
        Rows another sweep finished since :meth:`read` are read again."""
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise CommsimError(f"--out: cannot write {self.path!r}: {exc.strerror or exc}") \
                from None
        try:
            import fcntl
        except ImportError:   # not POSIX: no lock
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self.close()
                raise CommsimError(f"--out: another commsim sweep is writing {self.path!r}; "
                                   "wait for it to finish or give another --out") from None
        self.read()

    def append(self, line: str, row: dict) -> None:
        self._fh.write(line)
        self._fh.flush()
        self.rows.setdefault(row["key"], row)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
