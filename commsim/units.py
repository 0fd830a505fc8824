"""Units at the edges: sizes, bandwidths and times as users write them.

Inside commsim everything is bytes, seconds and bytes per second. Sizes take binary
suffixes like nccl-tests (``64K`` = 65536, ``1G`` = 2**30); bandwidths take decimal
prefixes (``25GB/s`` = 25e9 bytes/s, ``400Gb/s`` = 50e9 bytes/s); times take
``s``, ``ms``, ``us`` and ``ns``. Every parser raises :class:`CommsimError` with a
one-line message naming the field.

A bare number is a bandwidth in bytes/s or a time in seconds where the caller allows it:
topology and profile files (YAML numbers such as ``latency: 0`` or ``bandwidth: 1e9``)
keep that reading. Command-line flags pass ``require_unit=True``: there ``--alpha 5``
could mean 5 us as easily as 5 s, so a bare number other than 0 is refused with the units
to add.

Every parser also refuses values beyond what any machine has (:data:`MAX_SIZE`,
:data:`MIN_BANDWIDTH` to :data:`MAX_BANDWIDTH`, :data:`MAX_TIME`): a typo like ``1e300GB/s``
would otherwise overflow the arithmetic downstream into inf and nan.
"""

from __future__ import annotations

import math
import re

from commsim.errors import CommsimError

_SIZE_SUFFIX = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}

MAX_SIZE = 2**50            # bytes (1024T): a buffer larger than any machine's memory
MIN_BANDWIDTH = 1.0         # bytes/s
MAX_BANDWIDTH = 1e18        # bytes/s (1 EB/s): a thousand times the fastest link
MAX_TIME = 1e6              # seconds (11.6 days)
_DECIMAL = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_BW_RE = re.compile(r"^\s*(\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*([KMGTP]?)(B|b)(?:/s|ps)\s*$")
_TIME_RE = re.compile(r"^\s*(\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*(s|ms|us|µs|ns)\s*$")


def parse_size(text: str | int, field: str = "size") -> int:
    """Bytes from ``8``, ``64K``, ``1M``, ``4G`` (powers of two; ``B``/``iB`` optional)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _SIZE_RE.match(str(text))
        if not m:
            raise CommsimError(
                f"{field}: {text!r} is not a size; write bytes like 8, 64K, 1M or 4G"
            )
        value = float(m.group(1)) * _SIZE_SUFFIX[m.group(2).upper()]
        if value > MAX_SIZE:    # also inf, from a number of hundreds of digits
            raise CommsimError(f"{field}: {text!r} is more than {format_size(MAX_SIZE)} "
                               f"({MAX_SIZE} bytes); give a smaller size")
        if value != int(value):
            raise CommsimError(f"{field}: {text!r} is not a whole number of bytes")
        value = int(value)
    if value < 1:
        raise CommsimError(f"{field}: {text!r} must be at least 1 byte")
    if value > MAX_SIZE:
        raise CommsimError(f"{field}: {text!r} is more than {format_size(MAX_SIZE)} "
                           f"({MAX_SIZE} bytes); give a smaller size")
    return value


def parse_size_range(text: str, field: str = "sizes", factor: int = 2) -> list[int]:
    """Sizes from ``1K:1G`` (each ``factor`` times the last) or ``1K,4K,1M``."""
    text = str(text)
    if ":" in text:
        lo_text, _, hi_text = text.partition(":")
        lo, hi = parse_size(lo_text, field), parse_size(hi_text, field)
        if hi < lo:
            raise CommsimError(f"{field}: {text!r} ends below where it starts; write LOW:HIGH")
        sizes = [lo]
        while sizes[-1] * factor <= hi:
            sizes.append(sizes[-1] * factor)
        return sizes
    sizes = [parse_size(part, field) for part in text.split(",") if part.strip()]
    if not sizes:
        raise CommsimError(f"{field}: {text!r} holds no size; give e.g. 1M, 1K:1G or 1K,64K")
    return sizes


def _bare_number(text) -> float | None:
    """The value of a unit-less number (``5``, ``1e9``, ``0``, a Python int or float),
    else None."""
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return float(text)
    try:
        return float(str(text).strip())
    except ValueError:
        return None


def parse_bandwidth(text: str | float, field: str = "bandwidth", *,
                    require_unit: bool = False) -> float:
    """Bytes per second from ``25GB/s``, ``400Gb/s``, ``100Gbps``.

    A bare number is bytes/s, unless ``require_unit`` (command-line flags), which refuses
    it: ``--bandwidth 25`` is far more likely to mean 25 GB/s than 25 bytes/s.
    """
    m = None if isinstance(text, (int, float)) else _BW_RE.match(str(text).strip())
    if m:
        value = float(m.group(1)) * _DECIMAL[m.group(2).upper()]
        if m.group(3) == "b":
            value /= 8.0
    else:
        value = _bare_number(text)
        if value is None:
            raise CommsimError(
                f"{field}: {text!r} is not a bandwidth; write e.g. 25GB/s or 400Gb/s")
    if not math.isfinite(value) or value <= 0:
        raise CommsimError(f"{field}: {text!r} must be a positive bandwidth")
    if not MIN_BANDWIDTH <= value <= MAX_BANDWIDTH:
        where = "below 1 B/s" if value < MIN_BANDWIDTH else "above 1 EB/s"
        raise CommsimError(f"{field}: {text!r} is {where}; give a bandwidth between 1 B/s and "
                           "1e18 B/s (1 EB/s), e.g. 25GB/s")
    if require_unit and not m:
        n = str(text).strip()
        raise CommsimError(f"{field}: {text!r} has no unit; write {n}GB/s or "
                           f"{n}Gb/s (bits per second), or MB/s")
    return value


def parse_time(text: str | float, field: str = "time", *, require_unit: bool = False,
               units: tuple[str, ...] = ("us", "ms", "s")) -> float:
    """Seconds from ``5us``, ``1.5ms``, ``700ns``, ``2s``.

    A bare number is seconds, unless ``require_unit`` (command-line flags), which refuses
    any bare number but 0 (zero needs no unit), suggesting ``units`` in its message.
    """
    m = None if isinstance(text, (int, float)) else _TIME_RE.match(str(text).strip())
    if m:
        value = float(m.group(1)) * _TIME[m.group(2)]
    else:
        value = _bare_number(text)
        if value is None:
            raise CommsimError(
                f"{field}: {text!r} is not a time; write e.g. 5us, 700ns or 1.5ms")
    if not math.isfinite(value) or value < 0:
        raise CommsimError(f"{field}: {text!r} must be a time of zero or more")
    if value > MAX_TIME:
        raise CommsimError(f"{field}: {text!r} is more than {MAX_TIME:g} s (11 days); give a "
                           "shorter time")
    if require_unit and not m and value != 0:
        n = str(text).strip()
        *first, last = [f"{n}{u}" for u in units]
        raise CommsimError(f"{field}: {text!r} has no unit; write "
                           + (f"{', '.join(first)} or {last}" if first else last))
    return value + 0.0  # -0.0 -> 0.0


def parse_pairs(text: str | None, field: str, example: str = "",
                check=None) -> dict[str, str]:
    """``KEY=VALUE[,KEY=VALUE]`` -> ``{key: value}`` (stripped; empty items skipped), or
    one error line naming ``field`` and the item, with ``example`` appended.
    ``check(key)``, if given, vets each key in turn (it raises on a bad one)."""
    out: dict[str, str] = {}
    for item in str(text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise CommsimError(f"{field}: {item!r} is not KEY=VALUE"
                               + (f", e.g. {example}" if example else ""))
        if check is not None:
            check(key)
        out[key] = value
    return out


def format_size(nbytes: int) -> str:
    """``65536`` -> ``64K``; exact binary multiples get a suffix, others stay in bytes."""
    for suffix in ("T", "G", "M", "K"):
        unit = _SIZE_SUFFIX[suffix]
        if nbytes >= unit and nbytes % unit == 0:
            return f"{nbytes // unit}{suffix}"
    return str(nbytes)


def format_bytes(nbytes: float) -> str:
    """An amount of bytes, rounded to 4 significant digits in the largest binary unit it
    reaches: ``26214400`` -> ``25M``, ``5767168`` -> ``5.5M``, ``1e12`` -> ``931.3G``
    (for volumes; :func:`format_size` keeps sizes exact)."""
    n = float(nbytes)
    for suffix in ("T", "G", "M", "K"):
        unit = _SIZE_SUFFIX[suffix]
        if n >= unit:
            return f"{n / unit:.4g}{suffix}"
    return f"{n:.4g}"


def format_bandwidth(bytes_per_s: float) -> str:
    """``25e9`` -> ``25 GB/s`` (decimal units, like vendors' line rates)."""
    for prefix, unit in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if bytes_per_s >= unit:
            return f"{bytes_per_s / unit:.4g} {prefix}B/s"
    return f"{bytes_per_s:.4g} B/s"


def format_time(seconds: float) -> str:
    """A time with a readable unit: ``1.5e-6`` -> ``1.5 us``."""
    for suffix, unit in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= unit:
            return f"{seconds / unit:.4g} {suffix}"
    return f"{seconds / 1e-9:.4g} ns"
