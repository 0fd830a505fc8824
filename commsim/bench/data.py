"""Check data that reduces exactly, and counting wrong elements against it.

Rank ``r``'s element ``i`` is ``((i mod 1021) + 3 (i mod 1019) + 5 r) mod m``: small
integers, so sums over ``p`` ranks are exact in every dtype (``m`` is chosen so that
``(m - 1) p`` fits the dtype's exact integers; int8 and uint8 take ``m = 16`` and their
sums wrap modulo 2^8, exactly, see :func:`typed`), different on every rank (a misplaced
or missing contribution shows), and periodic with period ``1021 * 1019`` so large
buffers are built and checked by tiling one period instead of holding ``p`` inputs.

An *expectation* is a list of ``(offset, length, base)``: the rank's result at
``offset + j`` must equal ``base[j % len(base)]`` for ``j < length``.
"""

from __future__ import annotations

import numpy as np

from commsim.bench.config import DType

PERIOD = 1021 * 1019


def modulus(dtype: DType, nranks: int) -> int:
    """Values are ``0 .. m-1`` with ``(m-1) * nranks`` exact in ``dtype`` (at most 16).
    8-bit integers take ``m = 16`` on any rank count: their sums wrap modulo 2^8 (as
    NCCL's do), which is exact too, so a large run checks the wrapping."""
    if dtype.wraps:
        return 16
    return max(1, min(16, dtype.exact // max(1, nranks) + 1))


def typed(base: np.ndarray, dtype: DType) -> np.ndarray:
    """``base`` (whole numbers, float64) as ``dtype`` holds them: integer types wrap
    modulo 2^bits (two's complement for signed ones), as their sums do, through int64
    (a float-to-int8 cast of 300 is undefined, an int64-to-int8 one wraps); numpy
    arrays of other types are returned as they are (float64), converted by the caller."""
    if dtype.integer:
        return base.astype(np.int64).astype(dtype.name)
    return base


def pattern(rank: int, length: int, m: int) -> np.ndarray:
    """One period (or all, if shorter) of rank ``rank``'s data, as float64."""
    i = np.arange(min(length, PERIOD), dtype=np.int64)
    return (((i % 1021) + 3 * (i % 1019) + 5 * rank) % m).astype(np.float64)


def _window(values: np.ndarray, start: int, length: int) -> np.ndarray:
    """Elements ``start .. start+length`` of the periodic sequence ``values``, one period."""
    n = min(length, len(values))
    return values[(start + np.arange(n)) % len(values)]


def input_of(collective: str, rank: int, nranks: int, count: int, m: int) -> tuple[np.ndarray, int]:
    """``(base, length)``: rank's input is ``base`` tiled to ``length`` elements.

    ``length`` is ``count`` except for reduce_scatter (the whole ``count * p`` input).
    """
    length = count * nranks if collective == "reduce_scatter" else count
    return pattern(rank, length, m), length


def expectation(collective: str, rank: int, nranks: int, count: int, m: int,
                root: int = 0) -> list[tuple[int, int, np.ndarray]]:
    """What this rank's result must hold (see the module docstring)."""
    p = nranks
    if collective in ("allreduce", "reduce"):
        if collective == "reduce" and rank != root:
            return []  # MPI and torch leave non-root buffers unspecified
        total = sum(pattern(r, count, m) for r in range(p))
        return [(0, count, total)]
    if collective == "broadcast":
        return [(0, count, pattern(root, count, m))]
    if collective == "reduce_scatter":
        total = sum(pattern(r, count * p, m) for r in range(p))
        return [(0, count, _window(total, rank * count, count))]
    if collective == "allgather":
        return [(q * count, count, pattern(q, count, m)) for q in range(p)]
    if collective == "alltoall":  # block ``rank`` (np.array_split) of every rank's input
        base, extra = divmod(count, p)
        lo, size = rank * base + min(rank, extra), base + (rank < extra)
        return [(q * size, size, _window(pattern(q, count, m), lo, size))
                for q in range(p) if size]
    raise ValueError(f"no expectation for {collective!r}")


def count_wrong(result, expect: list[tuple[int, int, np.ndarray]], convert) -> int:
    """Elements of ``result`` (numpy or torch, flat) that differ from ``expect``.

    ``convert`` turns a float64 numpy ``base`` into ``result``'s array type and dtype.
    """
    wrong = 0
    for offset, length, base in expect:
        seg = result[offset:offset + length]
        want = convert(base)
        period = len(base)
        whole, rest = divmod(length, period)
        if whole:
            wrong += int((seg[:whole * period].reshape(whole, period) != want[None]).sum())
        if rest:
            wrong += int((seg[whole * period:] != want[:rest]).sum())
    return wrong
