"""bench/relay.py's CPU ratio in pairs (issue 17): the statistics the target is judged with.

The pairs themselves run in CI's smoke run (``bench/relay.py --quick``); here the arithmetic:
the median's confidence interval from order statistics must hold its 95% (an off-by-one in
the rank would print an interval that covers the median too rarely), and a pair's ratio and
the pooled ratio must be per call, whatever the blocks' sizes.
"""

from __future__ import annotations

import random
import statistics
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1] / "bench"))  # after tests/ and src/

from pairs import Block, PairRun, median_ci


def block(who: str, calls: int, server: float, checkpoints: int = 0) -> Block:
    return Block(who, calls, 0, 1.0, server, 0.0, 0.0, 0.0, 0.0, checkpoints, 0.0, 0, 0)


def test_median_ci_ranks() -> None:
    values = [float(x) for x in range(1, 25)]
    random.Random(1).shuffle(values)
    assert median_ci(values) == (7.0, 18.0)  # n = 24: the 7th and the 18th order statistic
    assert median_ci([float(x) for x in range(6)]) == (0.0, 5.0)
    assert median_ci([1.0, 2.0, 3.0, 4.0, 5.0]) is None


def test_median_ci_covers_the_median_at_least_95_percent() -> None:
    rng = random.Random(17)
    for n in (6, 16, 24, 40):
        trials, covered = 3000, 0
        for _ in range(trials):
            ci = median_ci([rng.lognormvariate(0.0, 0.2) for _ in range(n)])
            assert ci is not None
            covered += ci[0] <= 1.0 <= ci[1]  # the median of lognormal(0, s) is 1
        assert covered / trials >= 0.95 - 0.01, (n, covered / trials)


def test_ratios_are_per_call() -> None:
    run = PairRun([(block("floor", 400, 0.040), block("relay", 200, 0.040)),
                   (block("floor", 200, 0.030), block("relay", 400, 0.090, checkpoints=1))],
                  400, 1)
    assert run.ratios() == [2.0, 1.5]
    # pooled: (0.130 s / 600 calls) / (0.070 s / 600 calls)
    assert abs(run.pooled() - 0.130 / 0.070) < 1e-12
    assert statistics.median(run.ratios()) == 1.75
