"""The cases every real executor is checked on, shared by the rank scripts of the tests.

Each registered (collective, algorithm) with several chunkings, both ends of the root
range, every group size of ``hierarchical``, lengths below the chunk count, and the
given dtypes; inputs are small integers, which reduce exactly in any order.
"""

import numpy as np

from commsim import collectives


def option_sets(collective: str, algorithm: str, p: int) -> list[dict]:
    """The build options every executor is checked with: both ends of the root range,
    every group size of ``hierarchical``, else none."""
    if collective in ("broadcast", "reduce"):
        return [{"root": 0}, {"root": p - 1}]
    if algorithm == "hierarchical":
        return [{"group_size": g} for g in range(1, p + 1) if p % g == 0]
    return [{}]


def cases(p: int, mults, lengths_and_dtypes):
    """Yield ``(collective, algorithm, schedule, root, n, dtype, inputs)``."""
    seed = 0
    for collective, algorithm in collectives.available():
        for mult in mults:
            for opts in option_sets(collective, algorithm, p):
                natural = collectives.build(collective, algorithm, p, **opts).nchunks
                schedule = collectives.build(collective, algorithm, p, natural * mult, **opts)
                for n, dtype in lengths_and_dtypes:
                    rng = np.random.default_rng(1000 * n + seed)
                    inputs = [rng.integers(-8, 8, size=n).astype(np.float64)
                              for _ in range(p)]
                    yield (collective, algorithm, schedule, opts.get("root", 0), n, dtype,
                           inputs)
                    seed += 1
