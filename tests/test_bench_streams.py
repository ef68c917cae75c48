"""bench/relay.py's stream A/B (``--streams --against``): the arithmetic it is judged with.

The rounds themselves need servers and take seconds (run by hand); here what the printed
figures come from: the difference per round is this relay's minus the other's, from the same
round (so the direct call's time cancels), in ms, and rounds without the other relay (a run
without ``--against``) give none.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1] / "bench"))  # after tests/ and src/

from relay import StreamRound, StreamRun, median_ci, stream_ab


def run(rounds: list[StreamRound]) -> StreamRun:
    return StreamRun({}, {}, {"short": 10, "long": 4}, {}, rounds)


def test_differences_are_this_minus_other_per_round_in_ms() -> None:
    a = StreamRound({"direct": 0.0010, "relay": 0.0016, "other": 0.0015},
                    {"floor": 0.0005, "relay": 0.0012, "other": 0.0010})
    b = StreamRound({"direct": 0.0030, "relay": 0.0033, "other": 0.0037},
                    {"floor": 0.0005, "relay": 0.0011, "other": 0.0011})
    fb, cpu = stream_ab([run([a]), run([b])])
    assert [round(x, 9) for x in fb] == [0.1, -0.4]
    assert [round(x, 9) for x in cpu] == [0.2, 0.0]


def test_rounds_without_the_other_relay_give_no_difference() -> None:
    alone = StreamRound({"direct": 0.001, "relay": 0.002}, {"relay": 0.001})
    assert stream_ab([run([alone, alone])]) == ([], [])


def test_a_shift_common_to_both_relays_leaves_the_interval_on_the_difference() -> None:
    # every round the machine's load moves both relays alike (by up to 5 ms); this relay is
    # 0.03 ms slower each time: the differences, and their interval, show exactly that
    rounds = [StreamRound({"direct": 0.0004, "relay": 0.0009 + k * 0.0005,
                           "other": 0.00087 + k * 0.0005}, {"relay": 0.001, "other": 0.001})
              for k in range(10)]
    fb, _ = stream_ab([run(rounds[:5]), run(rounds[5:])])
    ci = median_ci(fb)
    assert ci is not None and 0.029 < ci[0] <= ci[1] < 0.031
