"""Reading ``commsim bench --json`` files, checked line by line.

A results file is JSON lines: a config line (``{"type": "config", ...}``) first, then
result rows (``{"type": "result", ...}``), every key documented in docs/bench.md. Lines
of other types are skipped (later versions may add some), and so is a last line cut short
(no newline, not JSON): a run killed in the middle of writing a line (each line is one
write, so this is rare) or a copy taken while it was being written. Anything that would make a
comparison wrong raises :class:`~commsim.errors.CommsimError` with one line naming the
file, the line and the problem.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from commsim.errors import CommsimError

#: the keys of a result row that a comparison reads
REQUIRED = ("collective", "algorithm", "backend", "nranks", "size", "status", "time_us",
            "busbw_gbps", "busbw_factor", "t_model_us", "t_sim_us", "nchunks", "wrong")
_HINT = "expected the JSON lines that commsim bench --json writes"
PLACES = ("out-of-place", "in-place")
#: native collectives that older files (without ``place``) ran out of place
_NATIVE_OUT_OF_PLACE = ("reduce_scatter", "allgather", "alltoall")


def place_of(row: dict) -> str:
    """``out-of-place`` or ``in-place``: the row's ``place``, or for a file written before
    bench measured both what it ran: commsim's schedules in place (on their logical
    buffer), native reduce_scatter, allgather and alltoall out of place, the other native
    collectives in place."""
    place = row.get("place")
    if place:
        return place
    if row.get("algorithm") == "native" and row.get("collective") in _NATIVE_OUT_OF_PLACE:
        return "out-of-place"
    return "in-place"


@dataclass
class Run:
    """One results file: its config line, its ``prediction`` (None in older files) and
    its result rows in file order, each with ``_line`` (1-based line number) added."""

    path: Path
    config: dict
    rows: list[dict] = field(default_factory=list)
    label: str = ""

    @property
    def prediction(self) -> dict | None:
        pred = self.config.get("prediction")
        return pred if isinstance(pred, dict) else None

    @property
    def nranks(self) -> int:
        return self.config["nranks"]

    @property
    def backend(self) -> str:
        return self.config["backend"]


def _number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _check_config(where: str, record: dict) -> None:
    for key in ("nranks", "backend"):
        if key not in record:
            raise CommsimError(f"{where}: the config line lacks {key!r}")
    if not isinstance(record["nranks"], int) or isinstance(record["nranks"], bool) \
            or record["nranks"] < 1:
        raise CommsimError(f"{where}: nranks {record['nranks']!r} is not a rank count")
    pred = record.get("prediction")
    if pred is None:
        return
    if not isinstance(pred, dict):
        raise CommsimError(f"{where}: 'prediction' is not an object")
    for key in ("alpha", "beta", "gamma"):
        value = pred.get(key)
        if value is not None and not (_number(value) and value >= 0):
            raise CommsimError(f"{where}: prediction {key} {value!r} is not a number >= 0")
    if pred.get("mode") not in (None, "step", "dataflow"):
        raise CommsimError(f"{where}: prediction mode {pred['mode']!r} is not step or dataflow")


def _check_row(where: str, row: dict, config: dict) -> None:
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        names = ", ".join(repr(k) for k in missing)
        raise CommsimError(f"{where}: result row lacks {names}")
    for key in ("nranks", "backend"):
        if row[key] != config[key]:
            raise CommsimError(f"{where}: {key} {row[key]!r} differs from the config line's "
                               f"{config[key]!r}")
    for key in ("collective", "algorithm", "status"):
        if not isinstance(row[key], str) or not row[key]:
            raise CommsimError(f"{where}: {key} {row[key]!r} is not a name")
    size = row["size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise CommsimError(f"{where}: size {size!r} is not a whole number of bytes >= 1")
    if not (_number(row["busbw_factor"]) and row["busbw_factor"] > 0):
        raise CommsimError(f"{where}: busbw_factor {row['busbw_factor']!r} is not a number > 0")
    if row.get("place") not in (None, *PLACES):
        raise CommsimError(f"{where}: place {row['place']!r} is not out-of-place or in-place")
    nchunks = row["nchunks"]
    if nchunks is not None and (not isinstance(nchunks, int) or nchunks < 1):
        raise CommsimError(f"{where}: nchunks {nchunks!r} is not a chunk count or null")
    if row["status"] != "ok":
        return
    for key in ("time_us", "t_model_us", "t_sim_us", "busbw_gbps"):
        value = row[key]
        if key == "time_us" and value is None:
            raise CommsimError(f"{where}: time_us is null in a row whose status is ok")
        if value is not None and not (_number(value) and value >= 0):
            raise CommsimError(f"{where}: {key} {value!r} is not a number >= 0")


def load(path: str | Path, rows_required: bool = True) -> Run:
    """The config line and result rows of one file; raises CommsimError on bad input (and
    on a file of no result rows, unless not ``rows_required``)."""
    name = str(path)
    shown = repr(name)      # quoted: a blank name or a NUL in it shows
    if not name.strip():
        raise CommsimError(f"results: {shown} is not a file name; give a file that "
                           "commsim bench --json wrote")
    path = Path(path)
    try:    # no exists() first: a name too long or holding a NUL raises there too
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CommsimError(f"results: no such file {shown}") from None
    except IsADirectoryError:
        raise CommsimError(f"results: {shown} is a folder, not a results file") from None
    except (OSError, ValueError) as exc:    # ValueError: a NUL in the name
        raise CommsimError(f"results: cannot read {shown}: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommsimError(f"results: {shown} is not UTF-8 text (byte {exc.start + 1}); "
                           f"{_HINT}") from None
    run = None
    lines = text.splitlines()
    cut = len(lines) if text and not text.endswith("\n") else 0  # a last line without end
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{name} line {number}"
        try:
            record = json.loads(line)
        except RecursionError:
            raise CommsimError(f"{where}: nested too deeply to read; {_HINT}") from None
        except json.JSONDecodeError as exc:
            if number == cut:  # a run killed while writing it: the rows before it stand
                break
            raise CommsimError(f"{where}: not JSON ({exc.msg}); {_HINT}") from None
        if not isinstance(record, dict):
            raise CommsimError(f"{where}: not a JSON object; {_HINT}")
        kind = record.get("type")
        if run is None:
            if kind != "config":
                raise CommsimError(f'{where}: the first line is not a config line '
                                   f'({{"type": "config", ...}}); {_HINT}')
            _check_config(where, record)
            run = Run(path=path, config=record)
        elif kind == "config":
            raise CommsimError(f"{where}: a second config line; give each run's file "
                               f"separately (compare A.jsonl B.jsonl)")
        elif kind == "result":
            _check_row(where, record, run.config)
            run.rows.append({**record, "_line": number})
    if run is None:
        raise CommsimError(f"{name}: empty file; {_HINT}")
    if not run.rows and rows_required:
        raise CommsimError(f"{name}: no result rows after the config line (did the run stop "
                           f"before its first size?)")
    return run


def load_all(paths: list[str | Path]) -> list[Run]:
    """Every file, in order, each labelled by its file name (its path where names clash)."""
    runs = [load(p) for p in paths]
    names = [r.path.name for r in runs]
    seen: set[str] = set()
    for i, run in enumerate(runs, 1):
        label = run.path.name if names.count(run.path.name) == 1 else str(run.path)
        run.label = label if label not in seen else f"{label} (#{i})"
        seen.add(run.label)
    return runs
