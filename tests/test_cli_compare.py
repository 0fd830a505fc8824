"""``commsim compare``: tables, the HTML and Markdown reports on real bench output (the
fixtures), and bad input: one line on stderr, exit code 2, nothing written."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from commsim.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
GLOO, MPI = FIXTURES / "bench-gloo.jsonl", FIXTURES / "bench-mpi.jsonl"


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.headings, self.tables, self._in = [], [], 0, None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag == "table":
            self.tables += 1
        elif tag in ("h1", "h2"):
            self._in = tag

    def handle_data(self, data):
        if self._in:
            self.headings.append(data)

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """compare on both fixtures with --report and --markdown (run once: figures cost)."""
    out = tmp_path_factory.mktemp("compare")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["compare", str(GLOO), str(MPI), "--report", str(out / "gap.html"),
                     "--markdown", str(out / "md" / "gap.md")])
    return code, stdout.getvalue(), stderr.getvalue(), out


def test_compare_prints_plain_tables_when_captured(both):
    code, out, err, _ = both
    assert code == 0 and err == ""
    assert not any(ch in out for ch in "│┃━─┏└")
    blocks = [b for b in out.split("\n\n") if b.startswith("# ")]
    titles = [b.splitlines()[0] for b in blocks]
    assert titles == ["# allreduce / native", "# allreduce / ring", "# allreduce / rhd",
                      "# reduce_scatter / ring"]
    ring = blocks[1].splitlines()
    header = ring[1].split()
    assert header[:4] == ["#size", "file", "time(us)", "busbw(GB/s)"]
    assert header[-1] == "dominant_term" and "model_verdict" in header
    rows = [line.split() for line in ring[2:] if not line.startswith("#")]
    assert len(rows) == 8 and all(len(r) == len(header) for r in rows)
    assert {r[1] for r in rows} == {"bench-gloo.jsonl", "bench-mpi.jsonl"}
    verdicts = {r[header.index("model_verdict")] for r in rows}
    assert verdicts <= {"within_10%", "within_25%", "off"}
    assert all(r[-1].split("_")[0] in ("latency", "bandwidth", "reduction") for r in rows)
    summaries = [line for line in ring if line.startswith("# allreduce/ring,")]
    assert len(summaries) == 2 and all("median |error|" in s for s in summaries)
    native = blocks[0].splitlines()
    assert native[1].split() == ["#size", "file", "time(us)", "busbw(GB/s)"]
    assert "measured only" in blocks[0]
    assert out.rstrip().splitlines()[-2:] == [
        f"wrote {both[3] / 'gap.html'}",
        f"wrote {both[3] / 'md' / 'gap.md'} and 7 PNG files beside it"]


def test_compare_writes_a_self_contained_html_page(both):
    page = (both[3] / "gap.html").read_text()
    parser = _Page()
    parser.feed(page)
    # a busbw plot per group (4) and an error plot per group with predictions (3)
    assert len(parser.images) == 7
    for img in parser.images:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1]).startswith(b"\x89PNG")
        assert img.get("alt")
    assert parser.tables == 2 + 4  # inputs, summary, one verdict table per group
    for name in ("allreduce / ring", "reduce_scatter / ring", "Definitions"):
        assert name in parser.headings
    assert "<script" not in page and not re.search(r"(src|href)=\"https?:", page)
    assert 'class="bad"' in page or 'class="good"' in page or 'class="fair"' in page


def test_compare_writes_markdown_with_linked_pngs(both):
    md_path = both[3] / "md" / "gap.md"
    text = md_path.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 7
    for link in links:
        assert "/" not in link
        assert (md_path.parent / link).read_bytes().startswith(b"\x89PNG")
    assert "| size | file | time(us) |" in text and "## allreduce / ring" in text


def test_compare_single_file_tables_only(capsys, tmp_path):
    assert main(["compare", str(MPI)]) == 0
    out = capsys.readouterr().out
    assert "# allreduce / ring" in out and "file" not in out.split("\n")[1]
    assert "wrote" not in out


def test_compare_lists_skipped_rows(capsys, tmp_path):
    lines = MPI.read_text().splitlines()
    row = json.loads(lines[1])
    row.update(status="unsupported", note="no native allreduce here", time_us=None,
               busbw_gbps=None)
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join([lines[0], json.dumps(row)] + lines[2:]) + "\n")
    assert main(["compare", str(path)]) == 0
    out = capsys.readouterr().out
    assert "skipped allreduce/native 1K (s.jsonl line 2): unsupported: no native allreduce" in out


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    config, *rows = GLOO.read_text().splitlines()
    row = json.loads(rows[1])

    def write(name: str, lines: list[str]) -> str:
        (tmp / name).write_text("".join(line + "\n" for line in lines))
        return str(tmp / name)

    def variant(**change) -> str:
        r = {**row, **change}
        return json.dumps(r)

    lacking = json.dumps({k: v for k, v in row.items() if k != "busbw_factor"})
    (tmp / "afile").write_text("x")
    return {
        "missing": ([str(tmp / "nope.jsonl")], "no such file"),
        "empty": ([write("empty.jsonl", [])], "empty file"),
        "no config": ([write("noconf.jsonl", rows)], "the first line is not a config line"),
        "not json": ([write("garbage.jsonl", ["nccl-tests output", *rows])], "not JSON"),
        "lacks key": ([write("lacks.jsonl", [config, lacking])],
                      "result row lacks 'busbw_factor'"),
        "nranks": ([write("nranks.jsonl", [config, variant(nranks=8)])],
                   "nranks 8 differs from the config line's 2"),
        "backend": ([write("backend.jsonl", [config, variant(backend="mpi")])],
                    "backend 'mpi' differs from the config line's 'gloo'"),
        "second bad": ([str(GLOO), write("second.jsonl", [config, variant(nranks=4)])],
                       "second.jsonl line 2"),
        "report parent is a file": ([str(GLOO), "--report", str(tmp / "afile" / "r.html")],
                                    "is a file, not a folder"),
        "report is a folder": ([str(GLOO), "--markdown", str(tmp)], "--markdown:"),
        "report is the input": ([str(GLOO), "--report", str(GLOO)], "one of the input files"),
    }


CASES = ["missing", "empty", "no config", "not json", "lacks key", "nranks", "backend",
         "second bad", "report parent is a file", "report is a folder", "report is the input"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    argv, message = _bad_inputs(inputs)[case]
    before = sorted(p.name for p in inputs.iterdir())
    out_dir = tmp_path / "out"
    extra = [] if "--report" in argv or "--markdown" in argv else [
        "--report", str(out_dir / "r.html"), "--markdown", str(out_dir / "r.md")]
    assert main(["compare", *argv, *extra]) == 2
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert len(err) == 1, captured.err
    assert err[0].startswith("commsim compare: error: ") and message in err[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert not out_dir.exists()
    assert sorted(p.name for p in inputs.iterdir()) == before


def test_summary_prints_one_line_per_group_and_file(capsys):
    assert main(["compare", str(GLOO), "--summary"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out and all(line.startswith(("allreduce/", "reduce_scatter/")) for line in out)
    assert any("median |error|" in line for line in out)


def _placed(tmp_path: Path, name: str, places=("out-of-place", "in-place")) -> Path:
    """The gloo fixture as a run with --place both writes it: each row once per place
    (the in-place copy 10% slower), native allreduce out of place unsupported (torch)."""
    config, *rows = GLOO.read_text().splitlines()
    out = [config]
    for line in rows:
        row = json.loads(line)
        for place in places:
            r = dict(row, place=place)
            if place == "in-place":
                r["time_us"] *= 1.1
                r["busbw_gbps"] /= 1.1
            elif (r["collective"], r["algorithm"]) == ("allreduce", "native"):
                r.update(status="unsupported", note="works in place only", time_us=None,
                         busbw_gbps=None)
            out.append(json.dumps(r))
    path = tmp_path / name
    path.write_text("\n".join(out) + "\n")
    return path


def test_compare_treats_place_as_a_variant_of_the_algorithm(tmp_path):
    from commsim.bench import results
    from commsim.bench.compare import compare

    both = compare(results.load_all([_placed(tmp_path, "both.jsonl")]))
    names = [g.name for g in both.groups]
    assert "allreduce/ring out-of-place" in names and "allreduce/ring in-place" in names
    assert "allreduce/native in-place" in names  # its out-of-place rows: skipped
    assert all(s.place == "out-of-place" for s in both.skipped if s.algorithm == "native")
    ring = {g.place: g for g in both.groups if g.algorithm == "ring" and g.collective ==
            "allreduce"}
    out_t = [p.time_us for p in ring["out-of-place"].points]
    in_t = [p.time_us for p in ring["in-place"].points]
    assert in_t == pytest.approx([t * 1.1 for t in out_t])  # never mixed in one group
    assert ring["in-place"].title == "allreduce / ring (in-place)"
    # one place only (--place in, or a file written before bench measured both): the
    # groups keep their plain names
    only = compare(results.load_all([_placed(tmp_path, "in.jsonl", ("in-place",))]))
    assert sorted(g.name for g in only.groups) == ["allreduce/native", "allreduce/rhd",
                                                   "allreduce/ring", "reduce_scatter/ring"]
    old = compare(results.load_all([GLOO]))
    assert [g.name for g in old.groups] == [g.name for g in only.groups]
    # an old file beside a new one: its rows join the place they ran (schedules in
    # place, native reduce_scatter out of place)
    mixed = compare(results.load_all([GLOO, _placed(tmp_path, "new.jsonl")]))
    groups = {g.name: g for g in mixed.groups}
    assert groups["allreduce/ring in-place"].runs() == [0, 1]
    assert groups["allreduce/ring out-of-place"].runs() == [1]


def test_compare_prints_the_place_of_each_group(tmp_path, capsys):
    assert main(["compare", str(_placed(tmp_path, "both.jsonl")), "--summary"]) == 0
    out = capsys.readouterr().out
    assert "allreduce/ring out-of-place, both.jsonl:" in out
    assert "allreduce/ring in-place, both.jsonl:" in out
    assert "skipped allreduce/native out-of-place 1K (both.jsonl line 2): unsupported" in out


def test_a_row_with_an_unknown_place_is_refused(tmp_path, capsys):
    config, first, *_ = GLOO.read_text().splitlines()
    path = tmp_path / "bad.jsonl"
    path.write_text(config + "\n" + json.dumps(dict(json.loads(first), place="sideways")) + "\n")
    assert main(["compare", str(path)]) == 2
    assert "place 'sideways' is not out-of-place or in-place" in capsys.readouterr().err


def test_the_report_shows_how_far_the_machine_drifted_since_calibration(tmp_path):
    """A run's config records the profile's ring shift timed again (``prediction.drift``):
    the report's input table shows the ratio, and a note says what it means."""
    config, *rows = GLOO.read_text().splitlines()
    record = json.loads(config)
    record["prediction"]["drift"] = {"bytes": 2 << 20, "profile_us": 3036.0,
                                     "now_us": 5070.0, "ratio": 1.67}
    path = tmp_path / "drifted.jsonl"
    path.write_text("\n".join([json.dumps(record), *rows]) + "\n")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["compare", str(path), str(MPI), "--report", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    head = page[page.index("input files"):page.index("summary per group")]
    assert ">drift<" in head and "1.67x" in head and "timed again" in head


def test_the_report_says_what_share_of_a_row_s_data_the_cache_held(tmp_path, capsys):
    """Rows predicted with a profile's warm rates (``warm``, the share in its cache) get
    an ``in cache`` column; files without it have none."""
    config, *rows = GLOO.read_text().splitlines()
    warmed = []
    for line in rows:
        row = json.loads(line)
        if row.get("type") == "result":
            row["warm"] = 1.0 if row["size"] <= 1 << 20 else 0.0
        warmed.append(json.dumps(row))
    path = tmp_path / "warm.jsonl"
    path.write_text("\n".join([config, *warmed]) + "\n")
    assert main(["compare", str(path)]) == 0
    out = capsys.readouterr().out
    assert re.search("in.cache", out) and "100%" in out   # plain columns: in_cache
    assert main(["compare", str(GLOO)]) == 0
    assert not re.search("in.cache", capsys.readouterr().out)
