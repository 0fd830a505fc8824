"""Resuming a sweep into the results file that an earlier run of it partly wrote.

``bench --json FILE`` where FILE already holds results: when its config line asks for
the same measurements (every setting but where the output goes, the timeout and the
``--min-busbw`` check), the run measures only the rows FILE lacks and appends them, so a
sweep stopped by a dead rank, a timeout or Ctrl-C goes on where it stopped and nothing
measured is lost. A last line cut short by a kill is dropped first. A FILE of another
run is refused (exit 2, one line), never overwritten.
"""

from __future__ import annotations

import json
from pathlib import Path

from commsim.errors import CommsimError

#: settings that may differ between the run that wrote a file and the one resuming it
FREE = ("json", "csv", "timeout", "min_busbw")


def _key(row: dict) -> tuple:
    from commsim.bench.results import place_of

    return row["collective"], row["algorithm"], int(row["size"]), place_of(row)


def measured(cfg, nranks: int | None = None) -> set[tuple] | None:
    """The ``(collective, algorithm, size, place)`` rows already in ``cfg.json``, or None
    when there is nothing to resume (no file, or an empty one). ``nranks``: this run's
    rank count (None: not known yet, as when the flags are checked before launch).
    Raises :class:`CommsimError` when the file holds another run's results."""
    from commsim.bench.results import load

    if not cfg.json:
        return None
    path = Path(cfg.json)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    run = load(path, rows_required=False)
    theirs = run.config.get("config")
    if not isinstance(theirs, dict):   # no settings recorded: nothing shows it the same sweep
        raise CommsimError(f"--json: {cfg.json} holds results without their settings (no "
                           "config in its first line); give a new file, or delete it")
    ours = json.loads(json.dumps(cfg.as_dict()))  # as the config line holds it
    differ = sorted(k for k in ours if k not in FREE and theirs.get(k) != ours[k])
    if nranks is not None and run.config.get("nranks") != nranks:
        differ.insert(0, f"ranks ({run.config.get('nranks')} there, {nranks} here)")
    if differ:
        raise CommsimError(f"--json: {cfg.json} holds the results of another run (it differs "
                           f"in {', '.join(differ)}); give a new file to keep both, or "
                           "delete it")
    return {_key(row) for row in run.rows}


def drop_cut_line(path) -> None:
    """Remove a last line without its end (a run killed while writing it)."""
    path = Path(path)
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[:data.rfind(b"\n") + 1])
