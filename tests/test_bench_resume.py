"""A sweep resumed into the results file it partly wrote: the rows there are kept, only
the missing ones measured; a file of another run is refused, never overwritten."""

import json

import pytest
from multiproc import assert_all_ok, run_torch_ranks

from commsim.bench import resume
from commsim.cli import build_parser, main
from commsim.cli.bench import config_from_args
from commsim.errors import CommsimError


def _cfg(path, *flags):
    args = build_parser().parse_args(["bench", "--json", str(path), "-b", "1K", "-e", "4K",
                                      *flags])
    return config_from_args(args)


def _row(size, algorithm="ring", place="in-place"):
    return {"type": "result", "collective": "allreduce", "algorithm": algorithm,
            "place": place, "backend": "gloo", "nranks": 2, "size": size, "status": "ok",
            "time_us": 10.0, "busbw_gbps": 1.0, "busbw_factor": 1.0, "t_model_us": None,
            "t_sim_us": None, "nchunks": 2, "wrong": 0}


def _file(path, cfg, rows, nranks=2, cut=False):
    lines = [json.dumps({"type": "config", "nranks": nranks, "backend": "gloo",
                         "config": cfg.as_dict()})] + [json.dumps(r) for r in rows]
    text = "\n".join(lines) + "\n"
    path.write_text(text + ('{"type": "result", "coll' if cut else ""))


def test_the_rows_a_file_holds_are_what_a_run_of_the_same_sweep_skips(tmp_path):
    path = tmp_path / "r.jsonl"
    cfg = _cfg(path)
    assert resume.measured(cfg, 2) is None  # no file yet
    path.write_text("")
    assert resume.measured(cfg, 2) is None  # an empty one
    _file(path, cfg, [], cut=True)          # killed while writing its first row
    assert resume.measured(cfg, 2) == set()
    _file(path, cfg, [_row(1024), _row(2048, place="out-of-place")], cut=True)
    assert resume.measured(cfg, 2) == {("allreduce", "ring", 1024, "in-place"),
                                       ("allreduce", "ring", 2048, "out-of-place")}
    # where the output goes, the timeout and the --min-busbw check may change
    again = _cfg(path, "--timeout", "60", "--min-busbw", "0.1", "--csv", str(tmp_path / "c"))
    assert len(resume.measured(again, 2)) == 2


@pytest.mark.parametrize("flags, nranks, named", [
    (("-n", "7"), 2, "iters"),
    (("--algorithm", "tree"), 2, "algorithms"),
    (("-e", "8K"), 2, "maxbytes"),
    ((), 4, "ranks (2 there, 4 here)"),
])
def test_a_file_of_another_run_is_refused_in_one_line(tmp_path, flags, nranks, named):
    path = tmp_path / "r.jsonl"
    _file(path, _cfg(path), [_row(1024)])
    with pytest.raises(CommsimError) as info:
        resume.measured(_cfg(path, *flags), nranks)
    text = str(info.value)
    assert "\n" not in text and named in text and "another run" in text
    assert "give a new file" in text


def test_check_flags_refuses_another_run_s_file_before_the_ranks_start(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    _file(path, _cfg(path), [_row(1024)])
    before = path.read_bytes()
    assert main(["bench", "--check-flags", "--json", str(path), "-b", "1K", "-e", "4K",
                 "-n", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "iters" in err and "Traceback" not in err
    assert path.read_bytes() == before
    assert main(["bench", "--check-flags", "--json", str(path), "-b", "1K", "-e", "4K"]) == 0


def test_a_cut_last_line_is_dropped_before_rows_are_appended(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n{"c"')
    resume.drop_cut_line(path)
    assert path.read_bytes() == b'{"a": 1}\n{"b": 2}\n'
    resume.drop_cut_line(path)  # a whole file stays as it is
    assert path.read_bytes() == b'{"a": 1}\n{"b": 2}\n'


BENCH = """
import sys
from commsim.cli import main
raise SystemExit(main(["bench"] + sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_an_interrupted_sweep_resumes_where_it_stopped(tmp_path):
    """A sweep's file cut after its first rows (and in the middle of a line, as a kill
    leaves it): the second run measures only the rest, and the file then holds every
    row once, the first run's untouched."""
    out = tmp_path / "r.jsonl"
    args = ("--json", str(out), "-b", "1K", "-e", "4K", "--algorithm", "ring", "-n", "2",
            "-w", "1", "--place", "in")
    assert_all_ok(run_torch_ranks(BENCH, 2, tmp_path, timeout=90, args=args))
    lines = out.read_text().splitlines()
    assert len(lines) == 4  # the config line and 1K, 2K, 4K
    out.write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])
    text = assert_all_ok(run_torch_ranks(BENCH, 2, tmp_path, timeout=90, args=args))
    assert "resuming" in text and "the 1 row it holds is kept" in text
    after = out.read_text().splitlines()
    assert after[:2] == lines[:2]  # the config line and the first row, as they were
    sizes = [json.loads(line)["size"] for line in after[1:]]
    assert sizes == [1024, 2048, 4096]
    # a third run finds every row there and measures nothing
    text = assert_all_ok(run_torch_ranks(BENCH, 2, tmp_path, timeout=90, args=args))
    assert out.read_text().splitlines() == after


def test_a_file_whose_config_line_holds_no_settings_is_refused(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"type": "config", "nranks": 2, "backend": "gloo"}) + "\n")
    with pytest.raises(CommsimError, match="without their settings"):
        resume.measured(_cfg(path), 2)
