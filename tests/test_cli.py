"""The command line's own handling: Ctrl-C, out of memory, --format."""

import os
import signal
import sys

import pytest

from commsim import cli
from commsim.cli import algorithms, main


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


def _simulate_in_1_5_gib(tmp_path, chunks: int):
    """``commsim simulate`` of ring allreduce of 1M on ring-8 in ``chunks`` chunks, in a
    process whose address space is limited to 1.5 GiB."""
    import resource
    import subprocess

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "commsim", "simulate", "--topology",
                           "ring-8", "--algorithm", "ring", "--size", "1M", "--chunks",
                           str(chunks)], capture_output=True, text=True, preexec_fn=limit,
                          env=env, timeout=300, cwd=tmp_path)


def test_out_of_memory_is_one_line_and_exit_2(tmp_path):
    """A simulation too big for the memory it is given (an address-space limit of 1.5 GB;
    ring allreduce on 8 ranks in 2,000,000 chunks: 224 million transfers, about 4 GB of
    schedule) fails with one line, not an allocator traceback."""
    p = _simulate_in_1_5_gib(tmp_path, 2_000_000)
    assert p.returncode == 2, p.stderr
    assert "out of memory" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_a_simulation_that_cannot_fit_is_refused_up_front_with_what_it_needs(tmp_path):
    """Its schedule fits (28 million transfers of ring allreduce on 8 ranks, about half a
    GB) but the simulator's arrays (about 160 B a transfer) would not, in an address space
    of 1.5 GB: refused before the simulation starts, in one line that says how much."""
    p = _simulate_in_1_5_gib(tmp_path, 250_000)
    assert p.returncode == 2, p.stderr
    assert "transfers needs about" in p.stderr and "GiB is available" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


@pytest.mark.parametrize("argv", [["algorithms"], ["topo", "list"],
                                  ["predict", "--topology", "ring-8", "--size", "1M"]])
def test_format_plain_and_rich_override_the_terminal_test(argv, capsys, monkeypatch):
    """Every verb takes --format: plain prints '#'-header columns with no box drawing even
    on a terminal; rich draws boxes even into a pipe; auto decides by the terminal."""
    from commsim.report import tables

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    try:
        assert main([*argv, "--format", "plain"]) == 0
        out = capsys.readouterr().out
        assert any(line.startswith("#") for line in out.splitlines())
        assert "┃" not in out and "━" not in out
        monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
        assert main([*argv, "--format", "rich"]) == 0
        assert not any(line.startswith("#") for line in capsys.readouterr().out.splitlines())
    finally:
        tables.set_format("auto")
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--format", "fancy"])
    assert exit_.value.code == 2 and "--format: unknown choice 'fancy'" in \
        capsys.readouterr().err


@pytest.mark.parametrize("argv, line", [
    (["simulat"], "commsim: error: VERB: unknown verb 'simulat'; did you mean 'simulate'?"),
    (["topo", "lst"], "commsim topo: error: COMMAND: unknown choice 'lst'; did you mean "
                      "'list'?"),
    (["bench", "--place", "bth", "--check-flags"],
     "commsim bench: error: --place: unknown choice 'bth'; did you mean 'both'?"),
    (["predict", "--collective", "allreduce", "--format", "zzz"],
     "commsim predict: error: --format: unknown choice 'zzz' (known: auto, plain, rich)"),
    (["plan", "--glboal-batch", "5"], "commsim plan: error: unrecognized arguments: "
     "--glboal-batch 5 (--glboal-batch: did you mean '--global-batch'?) (see commsim plan "
     "--help)"),
    (["simulate", "--alpa", "5us"], "commsim simulate: error: unrecognized arguments: --alpa "
     "5us (see commsim simulate --help)"),
    (["--bogus"], "commsim: error: unrecognized arguments: --bogus (see commsim --help)"),
])
def test_a_name_not_offered_gets_close_matches_in_one_line(argv, line, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(line), err


def test_topo_export_keeps_its_own_format(tmp_path):
    assert main(["topo", "export", "ring-8", "--format", "yaml", "-o",
                 str(tmp_path / "r.yaml")]) == 0
    assert "ring-8" in (tmp_path / "r.yaml").read_text()


def test_the_warm_note_says_how_much_of_which_rows_a_profile_s_cache_holds():
    from commsim.cli.common import warm_note

    def row(size, warm):
        return {"size": size, "warm": warm}

    assert warm_note([row(1 << 20, 0.0)]) is None
    assert warm_note([row(1 << 20, None)]) is None
    text = warm_note([row(1 << 20, 1.0), row(2 << 20, 0.5), row(64 << 20, 1 / 64),
                      row(128 << 20, 0.0)])
    assert text.startswith("3 of 4 rows keep part of their data")
    assert "all of it up to 2M" not in text and "all of it up to 1M" in text
    assert "2% of it at 64M" in text
    assert "all of it" not in warm_note([row(4 << 20, 0.25)])
