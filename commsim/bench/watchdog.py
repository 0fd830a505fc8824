"""Dead ranks, hung ranks and Ctrl-C on the ranks of ``bench``, ``calibrate`` and ``ddp``.

One :class:`Watchdog` a process (:func:`start`), a daemon thread that ends the rank with one
line on stderr and :data:`EXIT_LOST` when

- an operation (a bench row, a calibrate measurement, a ddp training step, any blocking
  call of the comm outside them) makes no progress for ``--timeout`` seconds: no blocking
  call of the comm (:class:`Watched`, which :func:`connect` returns) starts in that time;
- the backend reports a lost peer inside an operation (gloo's "Connection reset by peer"
  or its own timeout, an MPI error): :meth:`Watchdog.operation` turns the exception into
  the line;
- the launcher sends SIGTERM: torchrun's agent and mpirun end the survivors that way when a
  rank dies (the line then names the ranks of this host whose process is gone).

Ctrl-C (SIGINT) ends the rank with :data:`EXIT_INTERRUPTED`; rank 0 says where the rows
written so far are. Signals reach the thread through ``signal.set_wakeup_fd`` (the C-level
handler writes the signal's number to a pipe the thread selects on), so it acts even while
the main thread blocks inside MPI or gloo. The process ends with ``os._exit``: rows are
flushed one by one as they are written, so the JSON lines written so far stay whole.

One rank speaks: rank 0 at once, another rank only after :data:`STAGGER` seconds (by then
the launcher has usually ended it, because rank 0 exited) or, ended by SIGTERM, when the
ranks below it are dead. Under torchrun the launcher's store elects one speaker, and each
rank records there the row it is in, so a timeout names the ranks that never reached the
operation; under MPI a hung peer is "a peer" (the other rank, with two).
docs/reliability.md describes every failure mode.

Test-only hook (read here and nowhere else): with ``COMMSIM_TEST_HANG_RANK=R`` and
``COMMSIM_TEST_HANG_AFTER_ROWS=N`` rank ``R`` sleeps for ever before its row ``N+1``,
outside any watched operation: a rank that stops answering.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import threading
import time
from contextlib import contextmanager
from datetime import timedelta

EXIT_LOST = 3           # a rank died or stopped answering
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143   # SIGTERM with no dead peer in sight (128 + SIGTERM)
DEFAULT_TIMEOUT = 300.0
BACKEND_TIMEOUT_FLOOR = 60.0  # the backend's own timeout (and joining) is never below this
STAGGER = 2.0  # seconds a rank other than 0 waits before it speaks
HANG_RANK = "COMMSIM_TEST_HANG_RANK"
HANG_AFTER = "COMMSIM_TEST_HANG_AFTER_ROWS"
_STORE_KEY = "commsim/watchdog/{run}/{name}"


def parse_timeout(text: str) -> float:
    """``--timeout``: seconds, a number > 0 (``300``, ``2.5``) or with a unit (``90s``,
    ``500ms``); an argparse type (a bad value is one line and exit 2)."""
    from commsim.errors import CommsimError
    from commsim.units import parse_time

    try:
        value = parse_time(text, "--timeout")
    except CommsimError:
        value = None
    if value is None or not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time > 0; give seconds, e.g. "
                                         "300, 90s or 1.5s")
    return value


def add_flag(parser) -> None:
    """``--timeout SECONDS`` for the verbs that run on ranks."""
    parser.add_argument(
        "--timeout", type=parse_timeout, default=DEFAULT_TIMEOUT, metavar="SECONDS",
        help=f"end every rank (exit {EXIT_LOST}, one line naming the operation) when an "
        "operation waits this long for another rank: a rank died or hangs (default "
        f"{DEFAULT_TIMEOUT:g}; docs/reliability.md)")


def backend_timeout(timeout: float) -> timedelta:
    """The timeout handed to ``init_process_group``: ``timeout``, but never below
    :data:`BACKEND_TIMEOUT_FLOOR` (joining waits for every rank to start, which can take
    longer than a short --timeout); the watchdog enforces ``timeout`` itself."""
    return timedelta(seconds=max(float(timeout), BACKEND_TIMEOUT_FLOOR))


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _alive(pid: int) -> bool:
    """Is process ``pid`` (of this host) still running? A zombie is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _ranks(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def comm_failure(exc: BaseException) -> bool:
    """Is ``exc`` the backend saying that a peer is gone or did not answer?"""
    names = {c.__name__ for c in type(exc).__mro__}
    if names & {"DistError", "DistBackendError", "DistNetworkError", "DistStoreError"}:
        return True
    if type(exc).__module__.startswith("mpi4py"):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("gloo" in text or "Connection reset" in text
                                              or "Connection closed" in text)


def _why(exc: BaseException) -> str:
    """The backend's message, short: gloo's path prefix and its advice dropped."""
    text = " ".join(str(exc).split())
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    return text.split(". This is typically")[0][:160]


class Watchdog:
    """The watchdog of this process; see the module docstring."""

    def __init__(self, verb: str, timeout: float, results: list[str] | None = None,
                 poll: float | None = None, stagger: float = STAGGER) -> None:
        self.verb, self.timeout = verb, float(timeout)
        self.results = [r for r in (results or []) if r]
        self.poll = poll or min(1.0, max(0.05, self.timeout / 10))
        self.stagger = min(stagger, self.timeout)
        self.rank: int | None = None
        self.size = 1
        self.host: str | None = None
        self.peers: dict[int, tuple[str, int]] = {}  # rank -> (host, pid)
        self.label: str | None = None   # the operation in flight
        self.limit = self.timeout       # its timeout
        self.detail: str | None = None  # e.g. the message size of calibrate's exchanges
        self.last: str | None = None    # the last operation started
        self.ticks = 0                  # blocking calls started: progress
        self.rows = 0                   # row operations started
        self.cursor_hidden = False      # a live table (rich) hid the terminal's cursor
        self._store = None
        self._lock = threading.RLock()
        self._done = False
        self._pending: tuple[str, int, list[int]] | None = None  # line, code, dead then
        self._run = ""  # the store's keys of this run
        self._stop = threading.Event()
        self._pipe: tuple[int, int] | None = None
        self._saved: list = []
        self._thread: threading.Thread | None = None

    # --- lifetime ---------------------------------------------------------------------
    def start(self) -> Watchdog:
        if threading.current_thread() is threading.main_thread():
            r, w = os.pipe()
            os.set_blocking(w, False)
            self._pipe = (r, w)
            self._saved = [signal.set_wakeup_fd(w, warn_on_full_buffer=False)]
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._saved.append((signum, signal.signal(signum, self._handler)))
        self._thread = threading.Thread(target=self._loop, name="commsim-watchdog",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._pipe:
            signal.set_wakeup_fd(self._saved[0])
            for signum, handler in self._saved[1:]:
                signal.signal(signum, handler)
            try:
                os.write(self._pipe[1], b"\0")  # wake the thread: no signal has number 0
            except OSError:
                pass
            if self._thread:
                self._thread.join(timeout=2 * self.poll + 1)
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None
        self._store = None

    def attach(self, comm) -> None:
        """Learn this rank, its peers' hosts and pids, and (torch backends) the launcher's
        store, through one allgather on ``comm``."""
        self.rank, self.size = comm.rank, comm.size
        self.host = comm.info.host
        peers = comm.allgather_objects((self.host, os.getpid(), time.time_ns()))
        self.peers = {r: (h, int(p)) for r, (h, p, _) in enumerate(peers)}
        self._run = f"{self.verb}/{peers[0][2]}"  # rank 0's clock: new keys every run
        if getattr(comm, "backend", "mpi") != "mpi":
            self._store = _client_store()
            self._record()

    # --- operations -------------------------------------------------------------------
    @contextmanager
    def operation(self, label: str, row: bool = True, timeout: float | None = None):
        """Watch ``label`` (e.g. ``allreduce/ring 64K``) while the block runs: a comm failure
        inside it ends the rank with the line; ``row``: it counts for the test hook and the
        progress the store records."""
        if self.label is not None:  # nested: the outer operation already watches
            yield
            return
        if row:
            self._hang_hook()
            self.rows += 1
        self.label, self.last, self.detail = label, label, None
        self.limit = self.timeout if timeout is None else timeout
        self.ticks += 1
        if row:
            self._record()
        try:
            yield
        except Exception as exc:
            if comm_failure(exc):
                self.lost(exc)
            raise
        finally:
            self.label = None

    def next_row(self, label: str) -> None:
        """Inside an operation, the next row begins (calibrate's measurements, told apart
        by their progress messages)."""
        self._hang_hook()
        self.rows += 1
        self.label, self.last, self.detail = label, label, None
        self.ticks += 1
        self._record()

    def _hang_hook(self) -> None:
        """Test only (module docstring): rank ``COMMSIM_TEST_HANG_RANK`` stops answering
        after ``COMMSIM_TEST_HANG_AFTER_ROWS`` rows."""
        rank, after = os.environ.get(HANG_RANK), os.environ.get(HANG_AFTER)
        if rank is None or after is None or str(self.rank) != rank.strip():
            return
        if self.rows == int(after):
            self.label = None  # stuck outside any watched operation
            while True:
                time.sleep(3600)

    def _record(self) -> None:
        """Tell the store (torch backends) which row operation this rank is in."""
        if self._store is None or self.rank is None:
            return
        try:
            self._store.set(self._key(f"at/{self.rank}"), f"{self.rows}|{self.last or ''}")
        except Exception:
            self._store = None

    def _key(self, name: str) -> str:
        return _STORE_KEY.format(run=self._run, name=name)

    def _claim(self) -> bool:
        """May this rank say its line? With the store, only the first rank that asks may
        (so one line, whichever rank noticed first); without it, yes."""
        if self._store is None:
            return True
        try:
            return int(self._store.add(self._key("said"), 1)) == 1
        except Exception:
            return True

    # --- who is missing ---------------------------------------------------------------
    def dead_peers(self, wait: float = 0.0) -> list[int]:
        """The ranks of this host whose process is gone (``wait``: look again for up to
        that long, for a process still being torn down)."""
        if not any(r != self.rank and host == self.host
                   for r, (host, _) in self.peers.items()):
            return []
        end = time.monotonic() + wait
        while True:
            dead = [r for r, (host, pid) in sorted(self.peers.items())
                    if r != self.rank and host == self.host and not _alive(pid)]
            if dead or time.monotonic() >= end:
                return dead
            time.sleep(0.05)

    def behind(self) -> list[tuple[int, str]]:
        """``[(rank, the operation it last started)]`` for the ranks the store says never
        reached this operation (torch backends only)."""
        if self._store is None or self.rank is None:
            return []
        out = []
        for r in range(self.size):
            if r == self.rank:
                continue
            key = self._key(f"at/{r}")
            try:
                value = self._store.get(key).decode() if self._store.check([key]) else "0|"
            except Exception:
                return []
            rows, _, label = value.partition("|")
            if int(rows or 0) < self.rows:
                out.append((r, label))
        return out

    # --- the line ---------------------------------------------------------------------
    def _what(self) -> str:
        label = self.label or (f"after {self.last}" if self.last else "set-up")
        return f"{label}, {self.detail}" if self.detail and self.label else label

    def _kept(self) -> str:
        if not self.results:
            return ""
        if self.rank not in (0, None):
            return f"; rank 0 has the rows so far in {', '.join(self.results)}"
        rows = _count_rows(self.results[0])
        count = "" if rows is None else f"{rows} result row{'s' if rows != 1 else ''} "
        return f"; {count}kept in {', '.join(self.results)}"

    def _missing(self, dead: list[int]) -> str:
        if dead:
            return f"{_ranks(dead)} exited"
        late = self.behind()
        if late:
            ranks = [r for r, _ in late]
            last = {label for _, label in late}
            where = f" (last started: {last.pop()})" if len(last) == 1 and "" not in last \
                else ""
            return f"{_ranks(ranks)} did not reach it{where}"
        if self.size == 2 and self.rank is not None:  # the one peer there is
            return f"rank {1 - self.rank} did not answer"
        return "a peer did not answer"

    def lost(self, exc: BaseException) -> None:
        """The backend failed inside an operation: say so and end the rank."""
        what, dead = self._what(), self.dead_peers(wait=1.0)
        line = (f"{what}: {self._missing(dead)} ({_why(exc)}); stopping (exit {EXIT_LOST})"
                f"{self._kept()}")
        self._post(line, EXIT_LOST, dead)

    def _timeout(self) -> None:
        what, dead = self._what(), self.dead_peers()
        line = (f"{what}: no answer within --timeout {_seconds(self.limit)}: "
                f"{self._missing(dead)}; stopping (exit {EXIT_LOST}){self._kept()}")
        self._post(line, EXIT_LOST, dead)

    def _post(self, line: str, code: int, dead: list[int]) -> None:
        """Say ``line`` and exit ``code``: rank 0 now, another rank after the stagger. A
        SIGTERM during the stagger (the launcher ending the job because a rank exited)
        ends it at once, with the line only if the ranks below it were dead when it
        noticed (else one of them speaks)."""
        self._pending = (line, code, dead)
        if self.rank not in (0, None):
            end = time.monotonic() + self.stagger
            while time.monotonic() < end:
                self._signals(end - time.monotonic())
        self._finish(line, code)

    def _signal(self, signum: int) -> None:
        if signum == signal.SIGINT:
            line = (f"{self._what()}: interrupted (Ctrl-C); stopping (exit "
                    f"{EXIT_INTERRUPTED}){self._kept()}")
            self._finish(line if self.rank in (0, None) else None, EXIT_INTERRUPTED)
        elif signum == signal.SIGTERM:
            if self._pending:
                line, code, dead = self._pending
                self._finish(line if self._lowest(dead) else None, code)
                return
            dead = self.dead_peers(wait=0.5)
            code = EXIT_LOST if dead else EXIT_TERMINATED
            why = (f"{_ranks(dead)} exited (and the launcher sent SIGTERM)" if dead else
                   "stopped by SIGTERM (the launcher's, when another rank failed, or a "
                   "user's)")
            line = f"{self._what()}: {why}; stopping (exit {code}){self._kept()}"
            self._finish(line if self._speaks(dead) else None, code)

    def _lowest(self, dead: list[int]) -> bool:
        """Is this the lowest rank not in ``dead``?"""
        return self.rank is None or self.rank == min(
            r for r in range(self.size) if r not in dead)

    def _speaks(self, dead: list[int]) -> bool:
        """Does this rank say a SIGTERM's line? Rank 0 does; with the store (which elects
        one speaker) so does the lowest rank not known to be dead. Without it a rank that
        is gone may have exited after saying its own line: stay silent."""
        return self.rank in (0, None) or (self._store is not None and self._lowest(dead))

    def _handler(self, signum, frame) -> None:  # the main thread's, when it runs
        self._signal(signum)

    def _finish(self, line: str | None, code: int) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
            if line and code != EXIT_INTERRUPTED and not self._claim():
                line = None  # another rank said it
            try:
                if self.cursor_hidden:
                    os.write(1, b"\x1b[?25h")  # show it again
                if line:
                    os.write(2, f"commsim {self.verb}: {line}\n".encode())
            except OSError:
                pass
            os._exit(code)

    # --- the thread -------------------------------------------------------------------
    def _signals(self, wait: float) -> None:
        """Wait up to ``wait`` seconds for a signal on the wakeup pipe; act on it."""
        pipe = self._pipe
        if not pipe:
            time.sleep(max(0.0, wait))
            return
        try:
            ready, _, _ = select.select([pipe[0]], [], [], max(0.0, wait))
            data = os.read(pipe[0], 64) if ready else b""
        except (OSError, ValueError):  # closed by stop()
            return
        for signum in data:
            self._signal(signum)

    def _loop(self) -> None:
        seen, since = -1, time.monotonic()
        while not self._stop.is_set():
            self._signals(self.poll)
            now = time.monotonic()
            if self.label is None or self._done:
                seen = -1
                continue
            if self.ticks != seen:
                seen, since = self.ticks, now
            elif now - since >= self.limit:
                self._timeout()


def _count_rows(path: str) -> int | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return sum(1 for line in f if line.endswith("\n") and '"type": "result"' in line)
    except OSError:
        return None


def _client_store():
    """A client of the store at ``MASTER_ADDR:MASTER_PORT`` (torchrun's agent's), or None."""
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not addr or not port:
        return None
    try:
        from torch.distributed import TCPStore

        return TCPStore(addr, int(port), is_master=False, timeout=timedelta(seconds=3),
                        wait_for_workers=False)
    except Exception:
        return None


class Watched:
    """``comm`` whose blocking calls are progress for the watchdog (and, outside any
    operation, each one an operation of its own); everything else passes through."""

    def __init__(self, comm, dog: Watchdog) -> None:
        self._comm, self._dog = comm, dog

    def __getattr__(self, name):
        return getattr(self._comm, name)

    def _call(self, name: str, fn, *args):
        dog = self._dog
        dog.ticks += 1
        if dog.label is not None:
            return fn(*args)
        with dog.operation(f"{name} (outside the measurements)", row=False):
            return fn(*args)

    def barrier(self):
        return self._call("barrier", self._comm.barrier)

    def synchronize(self):
        return self._call("synchronize", self._comm.synchronize)

    def allgather_floats(self, values):
        return self._call("allgather", self._comm.allgather_floats, values)

    def allgather_objects(self, obj):
        return self._call("allgather", self._comm.allgather_objects, obj)

    def exchange(self, sends, recvs):
        first = (sends or recvs or [(None, None)])[0][0]
        if first is not None:
            from commsim.units import format_size

            nbytes = getattr(first, "nbytes", None)
            if nbytes is None:
                nbytes = first.numel() * first.element_size()
            self._dog.detail = f"{format_size(int(nbytes))} messages"
        return self._call("exchange", self._comm.exchange, sends, recvs)

    def make_op(self, *args, **kwargs):
        op = self._comm.make_op(*args, **kwargs)
        call, dog = op.call, self._dog

        def ticking():
            dog.ticks += 1
            return call()

        op.call = ticking
        return op


_current: Watchdog | None = None


def start(verb: str, timeout: float, results: list[str] | None = None) -> Watchdog:
    """Start this process's watchdog (stopping an earlier one)."""
    global _current
    stop()
    _current = Watchdog(verb, timeout, results).start()
    return _current


def stop() -> None:
    global _current
    if _current is not None:
        _current.stop()
        _current = None


def current() -> Watchdog | None:
    return _current


def connect(backend: str, info, timeout: float):
    """:func:`commsim.bench.comm.connect` watched by the current watchdog: joining may take
    up to the backend's timeout (:func:`backend_timeout`), every later blocking call
    ``timeout``; the watchdog learns the ranks (:meth:`Watchdog.attach`)."""
    from commsim.bench.comm import connect as plain

    dog = _current
    if dog is None:
        return plain(backend, info, timeout=timeout)
    limit = backend_timeout(timeout).total_seconds()
    with dog.operation("joining the other ranks", row=False, timeout=limit):
        comm = Watched(plain(backend, info, timeout=timeout), dog)
        dog.attach(comm)
    return comm


@contextmanager
def operation(label: str, row: bool = True):
    """:meth:`Watchdog.operation` of the current watchdog; nothing without one."""
    if _current is None:
        yield
        return
    with _current.operation(label, row=row):
        yield

