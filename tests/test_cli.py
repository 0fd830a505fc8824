"""The command line's own handling: Ctrl-C."""

import os
import signal
import sys

from commsim import cli
from commsim.cli import algorithms


def test_a_second_ctrl_c_while_reporting_the_first_is_ignored(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    real_write = sys.stderr.write

    def write_and_interrupt_again(text):
        os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C again
        return real_write(text)

    monkeypatch.setattr(algorithms, "run", interrupted)
    before = signal.getsignal(signal.SIGINT)
    try:
        monkeypatch.setattr(sys.stderr, "write", write_and_interrupt_again)
        assert cli.main(["algorithms"]) == 130
    finally:
        signal.signal(signal.SIGINT, before)
    assert "interrupted" in capsys.readouterr().err


def test_no_verb_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "VERB" in capsys.readouterr().err


def test_algorithms_piped_is_one_line_an_algorithm(capsys):
    from commsim import collectives

    assert cli.main(["algorithms"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if not line.startswith("#")]
    assert len(rows) == len(collectives.available())  # no formula folded onto a second line
    assert {len(r) for r in rows} == {6}
    assert ["allreduce", "ring"] in [r[:2] for r in rows]
