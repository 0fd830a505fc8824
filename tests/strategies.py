"""Hypothesis strategies shared by the tests: algorithm instances with valid chunkings."""

from hypothesis import strategies as st

from commsim import collectives
from commsim.collectives.rhd import core_size


def chunk_unit(collective: str, algorithm: str, nranks: int) -> int:
    """The number ``nchunks`` must be a multiple of, for this algorithm."""
    if algorithm in ("ring", "hierarchical"):
        return nranks
    if algorithm == "rhd":
        return core_size(nranks) if collective == "allreduce" else nranks
    return 2 if algorithm == "dbt" else 1


@st.composite
def instances(draw, max_ranks: int = 64, max_mult: int = 4, pairs=None):
    """``(collective, algorithm, nranks, nchunks, options)`` for any registered pair."""
    collective, algorithm = draw(st.sampled_from(pairs or collectives.available()))
    nranks = draw(st.integers(1, max_ranks))
    mult = draw(st.integers(1, max_mult))
    options = {}
    if algorithm == "hierarchical":
        divisors = [g for g in range(1, nranks + 1) if nranks % g == 0]
        options["group_size"] = draw(st.sampled_from(divisors))
    if collective in ("broadcast", "reduce"):
        options["root"] = draw(st.integers(0, nranks - 1))
    return collective, algorithm, nranks, chunk_unit(collective, algorithm, nranks) * mult, options
