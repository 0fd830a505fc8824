"""What ``launch.sh`` shows of a launcher's stderr when a run fails: the ranks' lines, not
the launcher's traceback (docs/reliability.md).

``python commsim/bench/launchlog.py torchrun|mpirun [RESULTS]`` copies its input to its
output line by line, except:

- torchrun's agent log lines (``W1130 08:25:49.818000 28879 torch/distributed/elastic/...``)
  and its own traceback with the ``ChildFailedError`` table that follows (a traceback whose
  first frame is torchrun's or ``torch/distributed``'s; a rank's traceback stays);
- mpirun's framed notices that a process exited with a non-zero status or on a signal
  (other notices stay).

It remembers what they said. At the end, when no rank said why the run ended (the
watchdog's line, ``commsim VERB: ...; stopping (exit N)...``,
:mod:`commsim.bench.watchdog`), it says it in one line: ``torchrun: rank 1 was killed by
signal 9 (SIGKILL; ...)``, or ``mpirun: interrupted (Ctrl-C); 7 result rows kept in
RESULTS`` (mpirun passes nothing more on from the ranks once it is interrupted).

Its exit status is the code the launch should end with: the ``N`` of the watchdog's first
line, else 130 when interrupted, else 3 when a rank was killed by a signal (the watchdog's
"a rank died"), else 0 (no opinion: launch.sh keeps the launcher's). It imports nothing of
commsim: launch.sh runs it as a file, beside a launcher that is starting.
"""

from __future__ import annotations

import re
import signal
import sys

_AGENT_LOG = re.compile(r"^[IWEDFC]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S*torch/distributed/\S*\] ")
_AGENT_FAILED = re.compile(r"failed \(exitcode: (-?\d+)\) local_rank: (\d+)")
_LAUNCHER_FRAME = re.compile(r'^\s*File ".*(/torchrun"|torch/distributed/)')
_TABLE_RANK = re.compile(r"^\s*rank\s*: (\d+)")
_TABLE_CODE = re.compile(r"^\s*exitcode\s*: (-?\d+)")
_SIGNALLED = re.compile(r"SignalException: Process \d+ got signal: (\d+)")
_WATCHDOG = re.compile(r"^commsim \w+: .*stopping \(exit (\d+)\)")
_MPI_FRAME = re.compile(r"^-{20,}$")
_MPI_SIGNAL = re.compile(r"process rank (\d+) with PID \d+ on node \S+ exited on\s+signal "
                         r"(\d+)")
_MPI_NONZERO = ("non-zero status", "non-zero exit code")
EXIT_LOST = 3  # commsim.bench.watchdog's: a rank died or stopped answering


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class Filter:
    """The filter of one launcher's stderr: :meth:`feed` each line (without its newline),
    then :meth:`finish`; both return the lines to show."""

    def __init__(self, launcher: str, results: str | None = None) -> None:
        self.launcher, self.results = launcher, results or None
        self.code: int | None = None           # the watchdog's exit code, first seen
        self.interrupted = False
        self.failures: dict[int, int] = {}      # rank -> exit code (negative: signal)
        self._held: list[str] = []              # a traceback or an mpirun frame, undecided
        self._dropping = False                  # inside torchrun's own traceback, to the end
        self._rank: int | None = None           # the table's current rank

    def feed(self, line: str) -> list[str]:
        m = _WATCHDOG.match(line)
        if m and self.code is None:
            self.code = int(m.group(1))
        if self.launcher == "mpirun":
            return self._mpi(line)
        return self._torchrun(line)

    # --- torchrun ---------------------------------------------------------------------
    def _torchrun(self, line: str) -> list[str]:
        sig = _SIGNALLED.search(line)
        if sig and int(sig.group(1)) == signal.SIGINT:
            self.interrupted = True
        if self._dropping:
            self._table(line)
            return []
        if _AGENT_LOG.match(line):
            failed = _AGENT_FAILED.search(line)
            if failed:
                self.failures.setdefault(int(failed.group(2)), int(failed.group(1)))
            if "Received 2 death signal" in line:
                self.interrupted = True
            return []
        if self._held:
            held, self._held = self._held, []
            if _LAUNCHER_FRAME.match(line):
                self._dropping = True
                return []
            return held + self.feed(line)
        if line == "Traceback (most recent call last):":
            self._held = [line]
            return []
        return [line]

    def _table(self, line: str) -> None:
        m = _TABLE_RANK.match(line)
        if m:
            self._rank = int(m.group(1))
        m = _TABLE_CODE.match(line)
        if m and self._rank is not None:
            self.failures[self._rank] = int(m.group(1))

    # --- mpirun -----------------------------------------------------------------------
    def _mpi(self, line: str) -> list[str]:
        if not self._held:
            if _MPI_FRAME.match(line):
                self._held = [line]
                return []
            return [line]
        self._held.append(line)
        if not _MPI_FRAME.match(line):
            return []
        block, self._held = self._held, []
        text = " ".join(" ".join(block).split())
        m = _MPI_SIGNAL.search(text)
        if m:
            self.failures.setdefault(int(m.group(1)), -int(m.group(2)))
            return []
        if any(words in text for words in _MPI_NONZERO):
            return []
        return block

    # --- the end ----------------------------------------------------------------------
    def finish(self) -> tuple[list[str], int]:
        """``(lines, exit code)``: what is still held, and the one line saying why the run
        ended when no rank said it."""
        out = [] if self._dropping else self._held
        self._held = []
        if self.code is not None:
            return out, self.code
        if self.interrupted:
            return out + [f"{self.launcher}: interrupted (Ctrl-C){self._kept()}"], 130
        killed = sorted((rank, -code) for rank, code in self.failures.items() if code < 0)
        if killed:
            rank, number = killed[0]
            return out + [f"{self.launcher}: rank {rank} was killed by signal {number} "
                          f"({_signal_name(number)}; out of memory, or killed by hand)"], \
                EXIT_LOST
        return out, 0


    def _kept(self) -> str:
        if not self.results:
            return ""
        try:
            with open(self.results, encoding="utf-8", errors="replace") as f:
                rows = sum(1 for line in f if line.endswith("\n") and '"type": "result"' in line)
        except OSError:
            return f"; no rows in {self.results}"
        return f"; {rows} result row{'s' if rows != 1 else ''} kept in {self.results}"


def main(argv: list[str] | None = None) -> int:
    """``launchlog.py LAUNCHER [RESULTS]``: RESULTS, the run's --json file, if any."""
    args = sys.argv[1:] if argv is None else argv
    launcher = args[0] if args else "torchrun"
    flt = Filter(launcher, args[1] if len(args) > 1 else None)

    def interrupted(signum, frame):
        # Ctrl-C reaches this process too: note it and keep reading (mpirun does not pass
        # the ranks' last words on once it is interrupted, so this says it)
        flt.interrupted = True

    signal.signal(signal.SIGINT, interrupted)
    stdin = open(sys.stdin.fileno(), encoding="utf-8", errors="replace", closefd=False)
    out = sys.stdout
    for raw in stdin:
        for line in flt.feed(raw.rstrip("\n")):
            out.write(line + "\n")
        out.flush()
    lines, code = flt.finish()
    for line in lines:
        out.write(line + "\n")
    out.flush()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
