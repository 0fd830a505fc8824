"""commsim.report and the numbers of commsim compare (commsim.bench.compare): errors,
verdicts and terms on hand-made rows (exact numbers), reading
bench files, plain and rich tables, figures, HTML and Markdown."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from commsim import model
from commsim.bench import compare_view, results
from commsim.bench.compare import (
    busbw_gbps,
    compare,
    dominant,
    rel_error,
    terms,
    verdict,
)
from commsim.errors import CommsimError
from commsim.report import figures, html, markdown
from commsim.report.document import Document, Figure, Heading, Paragraph
from commsim.report.tables import Table, plain, show

FIXTURES = Path(__file__).parent / "fixtures"
MiB = 1 << 20
PRED = {"alpha": 1e-5, "beta": 1e-9, "gamma": 1e-10, "gamma_source": "measured",
        "mode": "step", "overlap": True}
# allreduce ring, 4 ranks, 1 MiB, step mode: 6 steps of alpha, 6 x S/4 bytes, 3/4 S reduced
LATENCY_US, BANDWIDTH_US, REDUCTION_US = 60.0, 6 * MiB / 4 * 1e-3, 0.75 * MiB * 1e-4
MODEL_US = LATENCY_US + BANDWIDTH_US + REDUCTION_US  # 1711.5072


def config_line(**over) -> dict:
    line = {"type": "config", "backend": "gloo", "nranks": 4, "topology": "localhost",
            "started": "2026-01-01T00:00:00+00:00", "prediction": dict(PRED),
            "config": {"group_size": None}}
    line.update(over)
    return line


def result_row(**over) -> dict:
    row = {"type": "result", "collective": "allreduce", "algorithm": "ring",
           "backend": "gloo", "nranks": 4, "size": MiB, "time_us": 2000.0,
           "busbw_gbps": MiB / 2000e-6 * 1.5 / 1e9, "busbw_factor": 1.5,
           "t_model_us": MODEL_US, "t_sim_us": 2600.0, "eff_pct": None, "status": "ok",
           "exec": "step", "nchunks": 4, "wrong": 0, "note": None}
    row.update(over)
    return row


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ---- the numbers ----------------------------------------------------------------------

def test_error_and_verdict_definitions():
    assert rel_error(90.0, 100.0) == -10.0
    assert rel_error(125.0, 100.0) == 25.0
    assert rel_error(None, 100.0) is None and rel_error(1.0, None) is None
    assert rel_error(1.0, 0.0) is None
    assert verdict(-10.0) == "within 10%" and verdict(10.0) == "within 10%"
    assert verdict(10.01) == "within 25%" and verdict(-25.0) == "within 25%"
    assert verdict(25.01) == "off" and verdict(-99.0) == "off"
    assert verdict(None) is None
    assert busbw_gbps(MiB, 1000.0, 1.5) == pytest.approx(MiB / 1e-3 * 1.5 / 1e9, rel=1e-15)
    assert busbw_gbps(MiB, 0.0, 1.0) is None and busbw_gbps(MiB, None, 1.0) is None


def test_terms_of_a_step_ring_are_its_alpha_beta_gamma_parts():
    parts = terms("allreduce", "ring", 4, MiB, PRED, nchunks=4)
    assert parts["latency"] * 1e6 == pytest.approx(LATENCY_US, rel=1e-12)
    assert parts["bandwidth"] * 1e6 == pytest.approx(BANDWIDTH_US, rel=1e-12)
    assert parts["reduction"] * 1e6 == pytest.approx(REDUCTION_US, rel=1e-12)
    full = model.predict("allreduce", "ring", 4, MiB, 1e-5, 1e-9, 1e-10, nchunks=4)
    assert sum(parts.values()) == pytest.approx(full, rel=1e-12)  # additive in step mode
    name, share = dominant(parts)
    assert name == "bandwidth" and share == pytest.approx(BANDWIDTH_US / MODEL_US)
    assert terms("allreduce", "native", 4, MiB, PRED) is None
    assert terms("allreduce", "ring", 4, MiB, None) is None
    assert terms("allreduce", "ring", 4, MiB, {**PRED, "alpha": None}) is None
    no_gamma = terms("allgather", "ring", 4, MiB, {**PRED, "gamma": None})
    assert no_gamma["reduction"] == 0.0
    assert dominant({"latency": 0.0, "bandwidth": 0.0, "reduction": 0.0}) is None


def test_an_out_of_place_row_s_reduction_term_is_priced_as_bench_priced_it():
    """A ring writes every reduction apart from its operands out of place: at the
    profile's gamma_apart; in place, or without one, at gamma."""
    apart = {**PRED, "gamma_apart": 3e-10}
    inside = terms("allreduce", "ring", 4, MiB, apart, nchunks=4)
    outside = terms("allreduce", "ring", 4, MiB, apart, nchunks=4, apart=True)
    assert outside["reduction"] == pytest.approx(3 * inside["reduction"], rel=1e-12)
    assert outside["bandwidth"] == inside["bandwidth"]
    assert terms("allreduce", "ring", 4, MiB, PRED, nchunks=4, apart=True) == \
        terms("allreduce", "ring", 4, MiB, PRED, nchunks=4)


def test_point_from_a_hand_made_row_exact_numbers(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [config_line(), result_row()])
    comparison = compare(results.load_all([path]))
    (group,) = comparison.groups
    (p,) = group.points
    assert p.model_err == pytest.approx(100 * (MODEL_US - 2000) / 2000, rel=1e-12)  # -14.42
    assert p.model_err == pytest.approx(-14.42464, rel=1e-9)
    assert p.sim_err == pytest.approx(30.0, rel=1e-12)
    assert (p.model_verdict, p.sim_verdict) == ("within 25%", "off")
    assert p.busbw == pytest.approx(0.786432, rel=1e-12)
    assert p.model_busbw == pytest.approx(MiB / (MODEL_US * 1e-6) * 1.5 / 1e9, rel=1e-12)
    assert p.sim_busbw == pytest.approx(MiB / 2600e-6 * 1.5 / 1e9, rel=1e-12)
    assert p.dominant[0] == "bandwidth"
    (s,) = group.summaries()
    assert s.model_median == pytest.approx(14.42464, rel=1e-9)
    assert (s.model_within25, s.model_n, s.sim_within25, s.sim_n) == (1, 1, 0, 1)
    table = plain(compare_view.group_table(group, multi=False))
    row = [line for line in table.splitlines() if not line.startswith("#")][0].split()
    assert row == ["1M", "2000", "0.7864", "0.919", "-14.4", "within_25%", "0.6049",
                   "+30.0", "off", "bandwidth_92%"]


def test_summary_median_and_share_over_sizes(tmp_path):
    rows = [result_row(size=MiB * k, time_us=100.0, t_model_us=100.0 + e, t_sim_us=None)
            for k, e in ((1, 5.0), (2, -20.0), (4, 50.0))]
    path = write_jsonl(tmp_path / "r.jsonl", [config_line()] + rows)
    (group,) = compare(results.load_all([path])).groups
    (s,) = group.summaries()
    assert s.model_median == 20.0 and (s.model_within25, s.model_n) == (2, 3)
    assert s.sim_median is None and s.sim_n == 0
    line = compare_view.summary_lines(group)[0]
    assert "model median |error| 20.0%, 2/3 sizes within 25%" in line
    assert "simulator: no predictions" in line


def test_fixture_groups_and_skipped_rows(tmp_path):
    lines = (FIXTURES / "bench-gloo.jsonl").read_text().splitlines()
    row = json.loads(lines[1])
    row.update(status="unsupported", note="gloo has no native allreduce: test", time_us=None)
    path = tmp_path / "g.jsonl"
    path.write_text("\n".join([lines[0], json.dumps(row)] + lines[2:]) + "\n")
    comparison = compare(results.load_all([path, FIXTURES / "bench-mpi.jsonl"]))
    names = [g.name for g in comparison.groups]
    assert names == ["allreduce/native", "allreduce/ring", "allreduce/rhd", "reduce_scatter/ring"]
    assert len(comparison.skipped) == 1
    (text,) = compare_view.skipped_lines(comparison)
    assert "skipped allreduce/native 1K (g.jsonl line 2): unsupported" in text
    ring = comparison.groups[1]
    assert ring.runs() == [0, 1] and len(ring.points) == 8
    for p in ring.points:  # the fixture's own eff_pct is predicted / measured time
        assert p.model_err == pytest.approx(100 * (p.model_us / p.time_us - 1), rel=1e-9)
        assert p.dominant is not None


# ---- reading files --------------------------------------------------------------------

@pytest.mark.parametrize("records, message", [
    ([], "empty file"),
    ([result_row()], "line 1: the first line is not a config line"),
    ([config_line(), {k: v for k, v in result_row().items() if k != "t_sim_us"}],
     "line 2: result row lacks 't_sim_us'"),
    ([config_line(), result_row(nranks=8)], "nranks 8 differs from the config line's 4"),
    ([config_line(), result_row(backend="mpi")],
     "backend 'mpi' differs from the config line's 'gloo'"),
    ([config_line()], "no result rows"),
    ([config_line(), config_line()], "a second config line"),
    ([config_line(), result_row(size="1M")], "size '1M' is not a whole number"),
    ([config_line(), result_row(time_us=None)], "time_us is null"),
    ([{k: v for k, v in config_line().items() if k != "nranks"}], "lacks 'nranks'"),
])
def test_load_rejects_bad_files_in_one_line(tmp_path, records, message):
    path = write_jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(CommsimError) as exc:
        results.load(path)
    text = str(exc.value)
    assert message in text and str(path) in text and "\n" not in text


def test_load_reads_older_files_without_prediction(tmp_path):
    line = config_line()
    del line["prediction"]
    run = results.load(write_jsonl(tmp_path / "old.jsonl", [line, result_row()]))
    assert run.prediction is None
    (group,) = compare([run]).groups
    assert group.points[0].terms is None and group.points[0].model_err is not None


def test_labels_stay_distinct(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = write_jsonl(tmp_path / "a" / "r.jsonl", [config_line(), result_row()])
    two = write_jsonl(tmp_path / "b" / "r.jsonl", [config_line(), result_row()])
    labels = [r.label for r in results.load_all([one, two, one])]
    assert len(set(labels)) == 3


# ---- tables ---------------------------------------------------------------------------

def _table() -> Table:
    t = Table("demo table", ["size", "name", "value"], align=["r", "l", "r"])
    t.add(["1K", "within 10%", "1.5"])
    t.add(["64K", "", "12345"])
    t.notes = ["a note"]
    return t


def test_plain_table_is_nccl_tests_style():
    text = plain(_table())
    lines = text.splitlines()
    assert lines[0] == "# demo table"
    assert lines[1].startswith("#") and lines[1].split() == ["#size", "name", "value"]
    assert [line.split() for line in lines[2:4]] == [["1K", "within_10%", "1.5"],
                                                     ["64K", "-", "12345"]]
    assert lines[4] == "# a note"
    assert not any(ch in text for ch in "│┃━─┏└")


def test_show_picks_plain_or_rich_by_terminal():
    out = io.StringIO()  # not a terminal
    show(_table(), stream=out, lines=["after"])
    assert out.getvalue() == plain(_table()) + "\nafter\n"
    rich_out = io.StringIO()
    show(_table(), stream=rich_out, terminal=True)
    text = rich_out.getvalue()
    assert "demo table" in text and "within 10%" in text and "─" in text


# ---- figures, HTML, Markdown ----------------------------------------------------------

def test_size_ticks_are_powers_of_two():
    assert figures.size_ticks([1024, 4096, 4 * MiB]) == [2**e for e in range(10, 23)][::2]
    assert figures.size_ticks([8, 1 << 30], most=10)[0] == 8
    assert len(figures.size_ticks([8, 1 << 30], most=10)) <= 10


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])


def _doc() -> Document:
    png = figures.busbw("t", [figures.Series("measured", [1024, 2048], [0.1, 0.2]),
                              figures.Series("model", [1024, 2048], [0.2, None], "model")])
    err = figures.error("e", [figures.Series("model", [1024, 2048], [-5.0, 400.0], "model")])
    return Document("title <&>", [Heading("h"), Paragraph("p & q"), Figure(png, "c", "busbw"),
                                  Figure(err, "c2", "busbw"), _table()])


def test_html_is_self_contained_with_png_images():
    page = html.render(_doc())
    parser = _Images()
    parser.feed(page)
    assert len(parser.images) == 2 and "table" in parser.tags
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")
    assert "title &lt;&amp;&gt;" in page and "<script" not in page and "http" not in page
    assert 'class="r good"' not in page  # no classes were given


def test_markdown_writes_pngs_beside_it(tmp_path):
    written = markdown.write(_doc(), tmp_path / "sub" / "rep.md")
    md = (tmp_path / "sub" / "rep.md").read_text()
    assert [p.name for p in written] == ["rep-busbw.png", "rep-busbw-2.png", "rep.md"]
    assert "![c](rep-busbw.png)" in md and "![c2](rep-busbw-2.png)" in md
    assert "| 1K | within 10% | 1.5 |" in md
    for p in written[:-1]:
        assert p.read_bytes().startswith(b"\x89PNG")
