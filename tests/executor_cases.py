"""The cases every real executor is checked on, shared by the rank scripts of the tests.

Each registered (collective, algorithm) with several chunkings, both ends of the root
range, every group size of ``hierarchical``, lengths below the chunk count, and the
given dtypes; inputs are small integers, which reduce exactly in any order.
"""

import numpy as np

from commsim import collectives


def cases(p: int, mults, lengths_and_dtypes):
    """Yield ``(collective, algorithm, schedule, root, n, dtype, inputs)``."""
    seed = 0
    for collective, algorithm in collectives.available():
        if collective in ("broadcast", "reduce"):
            option_sets = [{"root": 0}, {"root": p - 1}]
        elif algorithm == "hierarchical":
            option_sets = [{"group_size": g} for g in range(1, p + 1) if p % g == 0]
        else:
            option_sets = [{}]
        for mult in mults:
            for opts in option_sets:
                natural = collectives.build(collective, algorithm, p, **opts).nchunks
                schedule = collectives.build(collective, algorithm, p, natural * mult, **opts)
                for n, dtype in lengths_and_dtypes:
                    rng = np.random.default_rng(1000 * n + seed)
                    inputs = [rng.integers(-8, 8, size=n).astype(np.float64)
                              for _ in range(p)]
                    yield (collective, algorithm, schedule, opts.get("root", 0), n, dtype,
                           inputs)
                    seed += 1
