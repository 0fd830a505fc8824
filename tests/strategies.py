"""Hypothesis strategies shared by the tests: algorithm instances with valid chunkings."""

from hypothesis import strategies as st

from commsim import collectives


@st.composite
def instances(draw, max_ranks: int = 64, max_mult: int = 4, pairs=None):
    """``(collective, algorithm, nranks, nchunks, options)`` for any registered pair."""
    collective, algorithm = draw(st.sampled_from(pairs or collectives.available()))
    # alltoall has nranks**2 chunks a schedule: keep its instances to the 1..17 ranks
    nranks = draw(st.integers(1, min(max_ranks, 17) if collective == "alltoall" else max_ranks))
    mult = draw(st.integers(1, max_mult))
    options = {}
    if algorithm == "hierarchical":
        divisors = [g for g in range(1, nranks + 1) if nranks % g == 0]
        options["group_size"] = draw(st.sampled_from(divisors))
    if collective in ("broadcast", "reduce"):
        options["root"] = draw(st.integers(0, nranks - 1))
    unit = collectives.chunk_unit(collective, algorithm, nranks)
    return collective, algorithm, nranks, unit * mult, options
