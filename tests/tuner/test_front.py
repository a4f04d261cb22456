"""The cost-latency front ranks pairs by exact TPOT bounds only where their floors could rank."""

from __future__ import annotations

import numpy as np

from tuner.search.front import PER_LEVEL, _most_promising


def test_most_promising_equals_bounding_every_pair():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 300))
        levels = rng.choice([1.0, 2.0, 3.0], size=n)
        floors = rng.uniform(0.01, 0.05, size=n)
        floors[rng.random(n) < 0.1] = np.inf  # unfit configurations
        exact = floors * rng.uniform(1.0, 3.0, size=n)
        exact[rng.random(n) < 0.2] = np.inf  # cannot serve the rate
        mine = [(level, None, 1) for level in levels]
        asked: list[int] = []

        def bound(rows, exact_=True, values=exact, asked=asked):
            asked.extend(int(i) for i in rows)
            return values[rows]

        for level in (1.0, 2.0, 3.0):
            ranked = sorted((e, i) for i, e in enumerate(exact)
                            if levels[i] == level and np.isfinite(e))  # fmt: skip
            want = [i for _, i in ranked[:PER_LEVEL]]
            got = _most_promising(mine, level, floors, lambda rows, exact: bound(rows))
            assert got == want, trial
        assert len(set(asked)) == len(asked)  # no pair bounded twice
