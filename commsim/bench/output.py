"""What rank 0 shows and writes: header, rich tables, footer, JSON lines and CSV.

JSON lines (``--json``): a first line ``{"type": "config", ...}`` with the versions, the
effective configuration and one entry per rank; then one ``{"type": "result", ...}`` line
per (collective, algorithm, size, place), written and flushed as soon as it is measured, so
an interrupted sweep keeps every finished row. Tables show a size's places side by side,
nccl-tests' out-of-place and in-place groups, one line a size. ``--csv`` writes the result
rows' keys (:data:`RESULT_KEYS`) as columns, also row by row. docs/bench.md describes every
key.
"""

from __future__ import annotations

import csv
import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from commsim import __version__
from commsim.bench import watchdog
from commsim.bench.config import resolve_average, resolve_dtype
from commsim.report import tables
from commsim.units import format_size

RESULT_KEYS = (
    "type", "collective", "algorithm", "place", "backend", "dtype", "nranks", "size", "count",
    "redop", "root", "nchunks", "exec", "native_as", "native_model", "native_exact",
    "time_us", "algbw_gbps", "busbw_gbps", "busbw_factor",
    "wrong",
    "t_model_us", "t_sim_us", "warm", "eff_pct", "iter_min_us", "iter_p50_us", "iter_p99_us",
    "iter_max_us", "iters", "warmup", "average", "per_op_barrier", "topology", "status",
    "note",
)
#: a row's first columns, then per place (nccl-tests' ``out-of-place`` then ``in-place``
#: groups) the measured ones and that place's predictions (they differ where a backend
#: copies its input out of place, or where its data stays in the cache)
HEAD_COLUMNS = ("size", "count", "type", "redop", "root")
PLACE_COLUMNS = ("time(us)", "p50(us)", "p99(us)", "algbw(GB/s)", "busbw(GB/s)", "#wrong",
                 "t_model(us)", "t_sim(us)", "eff%")
#: the plain header's one line names a place's columns with this prefix
PLACE_PREFIX = {"out-of-place": "out:", "in-place": "in:"}
_PLAIN_WIDTH = {"collective": 14, "algorithm": 12, "size": 12, "count": 12, "time(us)": 10,
                "as": 18}


def columns(places) -> tuple[str, ...]:
    """A row's columns for ``places``, as the plain header names them."""
    grouped = tuple(PLACE_PREFIX[p] + name for p in places for name in PLACE_COLUMNS)
    return HEAD_COLUMNS + grouped


def _open(path: str, append: bool = False):
    target = Path(path)
    if target.parent and not target.parent.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
    if append:
        from commsim.bench.resume import drop_cut_line

        drop_cut_line(target)
    return open(target, "a" if append else "w", newline="", encoding="utf-8")


def _num(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _console(launcher: str) -> Console:
    """stdout; a live terminal only when it is ours (torchrun or no launcher): MPI and
    SLURM forward rank 0's output through a pseudo-terminal of their own, where cursor
    moves garble. Elsewhere plain text, wide enough that the tables never fold."""
    console = Console(highlight=False, soft_wrap=True)
    # --format plain prints plain rows even on a terminal; rich needs a real one
    if console.is_terminal and tables.is_terminal(console.file) \
            and launcher in ("torchrun", "none"):
        return console
    return Console(highlight=False, soft_wrap=True, width=160, force_terminal=False,
                   color_system=None)


class Reporter:
    """Rank 0's output of one run."""

    def __init__(self, cfg, versions: dict, ranks: list[dict], predictor, nranks: int,
                 console: Console | None = None, resumed: int | None = None) -> None:
        """``resumed``: the rows already in ``cfg.json`` that this run goes on from
        (:mod:`commsim.bench.resume`; None: a new file)."""
        self.cfg, self.versions, self.ranks = cfg, versions, ranks
        self.resumed = resumed
        self.predictor, self.nranks = predictor, nranks
        self.console = console or _console(ranks[0].get("launcher", "none"))
        self.rows: list[dict] = []
        self.places: tuple[str, ...] = tuple(getattr(cfg, "places", ("in-place",)))
        self.pending: dict = {}  # (collective, algorithm, size) -> {place: row}, not shown yet
        self.live: Live | None = None
        self._streamed = False  # has the plain header been printed?
        self.json = _open(cfg.json, append=resumed is not None) if cfg.json else None
        # resuming, a CSV that already has its header gets rows only
        self._csv_header = not (resumed is not None and cfg.csv and Path(cfg.csv).is_file()
                                and Path(cfg.csv).stat().st_size > 0)
        self.csv_file = _open(cfg.csv, append=not self._csv_header) if cfg.csv else None
        self.csv = csv.DictWriter(self.csv_file, RESULT_KEYS) if self.csv_file else None

    # --- the config line and the header ----------------------------------------------
    def config_record(self) -> dict:
        return {"type": "config", "commsim": __version__,
                "python": platform.python_version(), **self.versions,
                "nranks": self.nranks, **oversubscription(self.ranks),
                "topology": self.predictor.topology_name,
                "prediction_notes": list(self.predictor.notes),
                "prediction": self.predictor.parameters(),
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "argv": sys.argv[1:], "config": self.cfg.as_dict(), "ranks": self.ranks}

    def start(self) -> None:
        record = self.config_record()
        if self.json and self.resumed is None:  # resuming: the file's config line stands
            self.json.write(json.dumps(record) + "\n")
            self.json.flush()
        if self.csv and self._csv_header:
            self.csv.writeheader()
            self.csv_file.flush()
        self._header(record)
        if self.console.is_terminal:
            self.live = Live(self._tables(), console=self.console, auto_refresh=False)
            self.live.start()
            dog = watchdog.current()
            if dog is not None:  # a rank that ends from the watchdog shows the cursor again
                dog.cursor_hidden = True

    def _header(self, record: dict) -> None:
        cfg, out = self.cfg, self.console.print
        versions = ", ".join(f"{k} {v}" for k, v in self.versions.items()
                             if k != "backend" and v)
        step = f"+{format_size(cfg.stepbytes)}" if cfg.stepbytes else f"x{cfg.stepfactor:g}"
        out(f"# commsim {__version__} bench: {', '.join(cfg.collectives)} | algorithms "
            f"{','.join(cfg.algorithms)} | backend {cfg.backend} | {self.nranks} ranks",
            markup=False)
        out(f"# versions: {versions}, python {record['python']}", markup=False)
        out(f"# sizes {format_size(cfg.minbytes)}..{format_size(cfg.maxbytes)} {step} "
            f"(nccl-tests sizes: per-rank buffer, or whole gathered buffer for allgather/"
            f"reduce_scatter) | dtype {resolve_dtype(cfg.dtype).name} | iters {cfg.iters} | "
            f"warmup {cfg.warmup} | check {'on' if cfg.check else 'off'} | average "
            f"{resolve_average(cfg.average)} | per-op barrier "
            f"{'on' if cfg.per_op_barrier else 'off'}", markup=False)
        pred = self.predictor
        ab = (f" (alpha {pred.alpha_beta[0] * 1e6:.3g} us, bandwidth "
              f"{1 / pred.alpha_beta[1] / 1e9:.3g} GB/s)" if pred.alpha_beta else "")
        gamma = (f", reduction {1 / pred.gamma / 1e9:.3g} GB/s ({pred.gamma_source})"
                 if pred.gamma else "")
        overlap = "" if pred.overlap else " (no core to spare: reductions cannot overlap)"
        out(f"# predictions: topology {pred.topology_name}{ab}{gamma}, {pred.mode} mode"
            f"{overlap}", markup=False)
        for note in pred.notes:
            out(f"#   {note}", markup=False)
        for r in self.ranks:
            out(f"#   rank {r['rank']}: host {r['host']}, device {r['device']}, local rank "
                f"{r['local_rank']} ({r['launcher']})", markup=False)
        for line in oversubscribed(self.ranks):
            out(f"# {line}", markup=False)
        if self.resumed is not None:
            rows = "1 row it holds is" if self.resumed == 1 else \
                f"{self.resumed} rows it holds are"
            out(f"# resuming {cfg.json}: the {rows} kept, the rest measured and appended",
                markup=False)

    # --- rows -------------------------------------------------------------------------
    def add(self, row: dict) -> None:
        """One measured row (one place of one size): written to JSON and CSV at once; the
        table's line of its size is shown once every place of it is in."""
        row.update(iters=self.cfg.iters, warmup=self.cfg.warmup, average=self.cfg.average,
                   per_op_barrier=self.cfg.per_op_barrier,
                   topology=self.predictor.topology_name)
        self.rows.append(row)
        if self.json:
            self.json.write(json.dumps({k: row.get(k) for k in RESULT_KEYS}) + "\n")
            self.json.flush()
        if self.csv:
            self.csv.writerow({k: row.get(k) for k in RESULT_KEYS})
            self.csv_file.flush()
        key = _line_key(row)
        line = self.pending.setdefault(key, {})
        line[row.get("place") or self.places[-1]] = row
        if len(line) < len(self.places) and row.get("place"):
            return
        del self.pending[key]
        if self.live:
            self.live.update(self._tables(), refresh=True)
        else:
            self._stream(line)

    def _stream(self, line: dict) -> None:
        """Not a terminal: print a size's line now, in plain columns under one ``#`` header
        line (nccl-tests' habit), so a pipe or a log shows every size as it is measured
        and an interrupted run keeps what it printed. ``as``: what a native row ran."""
        names = ("collective", "algorithm") + columns(self.places) + ("as",)
        row = next(iter(line.values()))
        cells = [row["collective"], row["algorithm"], *self._cells(line),
                 _plain_cell(_native_cell(row)) if row["algorithm"] == "native" else "-"]
        widths = [max(len(n), _PLAIN_WIDTH.get(n, 8)) for n in names]
        out = self.console.print
        if not self._streamed:
            self._streamed = True
            out("#" + " ".join(n.rjust(w) for n, w in zip(names, widths))[1:], markup=False)
        out(" ".join(c.rjust(w) for c, w in zip(cells, widths)), markup=False)
        self.console.file.flush()

    def _lines(self) -> dict:
        """``{(collective, algorithm): [{place: row}, ...]}``, one dict per size, in order."""
        out: dict = {}
        for r in self.rows:
            sizes = out.setdefault((r["collective"], r["algorithm"]), {})
            sizes.setdefault(r["size"], {})[r.get("place") or self.places[-1]] = r
        return {key: list(sizes.values()) for key, sizes in out.items()}

    def _tables(self) -> Group:
        tables = []
        for key, lines in self._lines().items():
            table = Table(title=f"{key[0]} / {key[1]} ({self.cfg.backend}, {self.nranks} "
                          "ranks)", title_justify="left")
            native = key[1] == "native"
            heads = ["\n" + name for name in HEAD_COLUMNS]
            for place in self.places:  # nccl-tests' groups, their name over the first column
                heads += [f"{place if i == 0 else ''}\n{name}"
                          for i, name in enumerate(PLACE_COLUMNS)]
            heads += ["\nas"] if native else []
            for head in heads:
                table.add_column(head, justify="right")
            for line in lines:
                row = next(iter(line.values()))
                table.add_row(*self._cells(line), *((_native_cell(row),) if native else ()))
            tables.append(table)
        return Group(*tables)

    def _cells(self, line: dict) -> list[str]:
        """A size's cells: the head, then each place's measurement and predictions (``N/A``
        for a form the backend lacks, ``-`` for one not measured)."""
        r = next(iter(line.values()))
        root = "-1" if r["root"] is None else str(r["root"])
        cells = [str(r["size"]), str(r["count"]), r["dtype"], r["redop"], root]
        for place in self.places:
            cells += _place_cells(line.get(place))
        return cells

    def stop(self) -> None:
        """End the live table; a size whose places are not all in (an interrupted run) is
        shown with what it has."""
        for line in self.pending.values():
            if not self.live:
                self._stream(line)
        self.pending.clear()
        if self.live:
            self.live.update(self._tables(), refresh=True)
            self.live.stop()
            self.live = None
            dog = watchdog.current()
            if dog is not None:
                dog.cursor_hidden = False

    # --- footer -----------------------------------------------------------------------
    def footer(self, summary: dict) -> None:
        out = self.console.print
        status = "OK" if summary["wrong"] == 0 else "FAILED"
        if self.cfg.check:
            out(f"# Out of bounds values : {summary['wrong']} {status}", markup=False)
        else:  # nothing was checked: nccl-tests prints N/A, not a reassuring 0
            out("# Out of bounds values : N/A (-c 0: results not checked)", markup=False)
        for (collective, algorithm), avg in summary["avg_busbw"].items():
            out(f"# Avg bus bandwidth    : {avg:.4f} GB/s  {collective}/{algorithm}",
                markup=False)
        unsupported = sorted({f"{r['collective']}/{r['algorithm']} {r.get('place') or ''}: "
                              f"{r['note']}".replace(" :", ":")
                              for r in self.rows if r["status"] == "unsupported"})
        for text in unsupported:
            out(f"# unsupported          : {text}", markup=False)
        for text in summary["failures"]:
            out(f"# FAILED               : {text}", markup=False)
        if self.cfg.json:
            out(f"# results              : {self.cfg.json}", markup=False)

    def close(self) -> None:
        for f in (self.json, self.csv_file):
            if f:
                f.close()


def _line_key(row: dict) -> tuple:
    return row["collective"], row["algorithm"], row["size"]


def _place_cells(r: dict | None) -> list[str]:
    """One place's measured cells of a row; ``N/A`` (nccl-tests' word) when the backend
    lacks that form, ``-`` throughout when it was not measured."""
    if r is None:
        return ["-"] * len(PLACE_COLUMNS)
    if r["status"] != "ok":
        return ["N/A"] + ["-"] * (len(PLACE_COLUMNS) - 1)
    return [_num(r["time_us"], 1), _num(r.get("iter_p50_us"), 1), _num(r.get("iter_p99_us"), 1),
            _num(r["algbw_gbps"]), _num(r["busbw_gbps"]), _wrong(r["wrong"]),
            _num(r.get("t_model_us"), 1), _num(r.get("t_sim_us"), 1), _num(r.get("eff_pct"), 0)]


def _wrong(value) -> str:
    """The #wrong cell: ``N/A`` when nothing was checked (``-c 0``), as nccl-tests prints."""
    return "N/A" if value is None else str(value)


def _plain_cell(text: str) -> str:
    """One whitespace-free field: ``ring = ring`` -> ``ring=ring``, ``rabenseifner ~ rhd``
    -> ``rabenseifner~rhd``, and spaces inside a name become ``_`` (as plain tables do)."""
    return "_".join(text.replace(" = ", "=").replace(" ~ ", "~").split())


def _native_cell(r: dict) -> str:
    """What a native row ran: the backend's algorithm, and the commsim schedule predicting
    it (``~`` when that is only a stand-in)."""
    if not r.get("native_as"):
        return "-"
    model = r.get("native_model")
    if not model:
        return r["native_as"]
    return f"{r['native_as']} = {model}" if r.get("native_exact") else \
        f"{r['native_as']} ~ {model}"


def host_load(ranks: list[dict]) -> list[tuple[str, int, int | None, bool]]:
    """Per host, in rank order: ``(host, ranks on it, its usable cores, oversubscribed)``.
    A host is oversubscribed when it runs more CPU ranks than it has cores (the union of
    its ranks' CPU affinities, :func:`commsim.bench.env.host_cores`); ranks that drive a
    GPU do not count."""
    from commsim.bench.env import host_cores

    out = []
    for host in dict.fromkeys(r["host"] for r in ranks):
        mine = [r for r in ranks if r["host"] == host]
        cores = host_cores(mine) if any(r.get("cores") for r in mine) else None
        cpu = [r for r in mine if not str(r.get("device", "")).startswith("cuda")]
        out.append((host, len(mine), cores, bool(cores) and len(cpu) > cores))
    return out


def oversubscription(ranks: list[dict]) -> dict:
    """The config line's record of it: ``oversubscribed`` (some host runs more CPU ranks
    than it has cores) and ``cores`` (``{host: usable cores}``)."""
    load = host_load(ranks)
    return {"oversubscribed": any(over for *_, over in load),
            "cores": {host: cores for host, _, cores, _ in load}}


def oversubscribed(ranks: list[dict]) -> list[str]:
    """A warning per host that runs more ranks than it has cores (CPU backends): there the
    times are the scheduler's, not the network's."""
    return [f"oversubscribed: {n} ranks on {cores} core{'s' if cores > 1 else ''} of {host}: "
            "latencies are the "
            "scheduler's, not the network's"
            for host, n, cores, over in host_load(ranks) if over]
