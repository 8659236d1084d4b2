"""A B B A rounds: how every side-by-side figure is measured, and what a row records.

Two workloads, ledgerset's (A) and its twin (B), run alternately on the same server and the same
client, A B B A in each round (so a drift in the machine's speed weighs on both alike), after one
warm-up each; each round gives one ratio, and a row reports their median and spread (min..max).
Ratios, not absolute times, because the machine is shared: both sides see the same load.
"""

from __future__ import annotations

import gc
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["Bar", "Row", "Timed", "interleave"]

#: One run of a side: the seconds it took (or, for a throughput, the seconds per unit).
Timed = Callable[[], Awaitable[float]]


@dataclass(frozen=True, slots=True)
class Bar:
    """A row's target: ``ratio <= limit`` (times) or ``ratio >= limit`` (throughputs)."""

    limit: float
    higher_is_better: bool = False

    def met(self, ratio: float) -> bool:
        return ratio >= self.limit if self.higher_is_better else ratio <= self.limit

    def __str__(self) -> str:
        return f"{'>=' if self.higher_is_better else '<='} {self.limit:.2f}"


@dataclass(frozen=True, slots=True)
class Row:
    """A measured ratio: its median over the rounds, its spread, and the bar it is held to
    (``None``: a reference, shown for comparison and held to nothing)."""

    name: str
    workload: str
    bar: Bar | None
    median: float
    low: float
    high: float
    rounds: int
    ledgerset_s: float
    raw_s: float

    @property
    def met(self) -> bool:
        return self.bar is None or self.bar.met(self.median)


async def interleave(
    name: str,
    workload: str,
    a: Timed,
    b: Timed,
    rounds: int,
    *,
    bar: Bar | None = None,
    throughput: bool = False,
) -> Row:
    """Run ``a`` and ``b`` in ``rounds`` rounds of A B B A and summarise the ratios A/B.

    With ``throughput`` the sides return seconds per unit and the ratio is B/A: A's units per
    second over B's, so that higher is faster.
    """
    await a()
    await b()
    ratios, a_times, b_times = [], [], []
    for _ in range(rounds):
        times = {"a": 0.0, "b": 0.0}
        for side, run in (("a", a), ("b", b), ("b", b), ("a", a)):
            gc.collect()
            times[side] += await run()
        ta, tb = times["a"] / 2, times["b"] / 2
        a_times.append(ta)
        b_times.append(tb)
        ratios.append(tb / ta if throughput else ta / tb)
    return Row(
        name,
        workload,
        bar,
        statistics.median(ratios),
        min(ratios),
        max(ratios),
        rounds,
        statistics.median(a_times),
        statistics.median(b_times),
    )
