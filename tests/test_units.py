"""Units at the edges: sizes, bandwidths, times."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commsim import units
from commsim.errors import CommsimError


@pytest.mark.parametrize("text,value", [
    ("8", 8), ("64K", 65536), ("1M", 2**20), ("4G", 4 * 2**30), ("1g", 2**30),
    ("256MiB", 256 * 2**20), ("2KB", 2048), (4096, 4096), ("1.5K", 1536),
])
def test_parse_size(text, value):
    assert units.parse_size(text) == value


@pytest.mark.parametrize("bad", ["", "abc", "1Q", "-4K", "0", "1.3", "K"])
def test_parse_size_rejects_nonsense(bad):
    with pytest.raises(CommsimError, match="size"):
        units.parse_size(bad)


def test_size_range():
    assert units.parse_size_range("1K:8K") == [1024, 2048, 4096, 8192]
    assert units.parse_size_range("1K:5K") == [1024, 2048, 4096]
    assert units.parse_size_range("8,1K") == [8, 1024]
    with pytest.raises(CommsimError, match="LOW:HIGH"):
        units.parse_size_range("1M:1K")


@pytest.mark.parametrize("text,value", [
    ("25GB/s", 25e9), ("400Gb/s", 50e9), ("100Gbps", 12.5e9), ("450 GB/s", 450e9),
    ("1e9", 1e9), (3e9, 3e9), ("12.5MB/s", 12.5e6),
])
def test_parse_bandwidth(text, value):
    assert units.parse_bandwidth(text) == pytest.approx(value)


@pytest.mark.parametrize("bad", ["fast", "0GB/s", "-1GB/s", "25GB", "inf"])
def test_parse_bandwidth_rejects_nonsense(bad):
    with pytest.raises(CommsimError, match="bandwidth"):
        units.parse_bandwidth(bad)


@pytest.mark.parametrize("text,value", [
    ("5us", 5e-6), ("700ns", 7e-7), ("1.5ms", 1.5e-3), ("2s", 2.0), ("0", 0.0), (1e-6, 1e-6),
])
def test_parse_time(text, value):
    assert units.parse_time(text) == pytest.approx(value)


@pytest.mark.parametrize("bad", ["soon", "-5us", "5 parsecs"])
def test_parse_time_rejects_nonsense(bad):
    with pytest.raises(CommsimError, match="time"):
        units.parse_time(bad)


@given(st.integers(1, 2**42))
def test_format_size_round_trips(n):
    assert units.parse_size(units.format_size(n)) == n


def test_formatting():
    assert units.format_bandwidth(25e9) == "25 GB/s"
    assert units.format_time(1.5e-6) == "1.5 us"
    assert units.format_time(2e-9) == "2 ns"


@pytest.mark.parametrize("parse,text,fragment", [
    (units.parse_time, "5", "'5' has no unit; write 5us, 5ms or 5s"),
    (units.parse_time, "1e-6", "has no unit"),
    (units.parse_time, 0.5, "has no unit"),
    (units.parse_bandwidth, "25", "'25' has no unit; write 25GB/s or 25Gb/s"),
    (units.parse_bandwidth, "1e9", "has no unit"),
])
def test_flags_require_a_unit(parse, text, fragment):
    with pytest.raises(CommsimError, match="--flag") as exc:
        parse(text, "--flag", require_unit=True)
    assert fragment in str(exc.value)


@pytest.mark.parametrize("text,value", [("0", 0.0), ("0.0", 0.0), (0, 0.0), ("-0", 0.0),
                                        ("5us", 5e-6), ("2s", 2.0)])
def test_zero_and_units_pass_when_a_unit_is_required(text, value):
    got = units.parse_time(text, "--flag", require_unit=True)
    assert got == pytest.approx(value) and str(got) != "-0.0"


def test_files_keep_bare_numbers():
    """Topology and profile YAML read bare numbers as seconds and bytes/s, as before."""
    assert units.parse_time("1e-6") == 1e-6 and units.parse_time(0) == 0.0
    assert units.parse_bandwidth("1e9") == 1e9 and units.parse_bandwidth(25e9) == 25e9
    assert units.parse_bandwidth("25GB/s", require_unit=True) == 25e9
    with pytest.raises(CommsimError, match="positive"):
        units.parse_bandwidth("0", "--bw", require_unit=True)
