"""The branch and bound on synthetic candidates: the same answer as brute force, fewer probes.

Each synthetic candidate has a true capacity below its bound; a probe "meets" when the rate is
at or below the capacity (monotone, as the search assumes). Brute force asks every candidate
with no bound; the search must find the same cost (and, with no rate, the same capacity on the
rate grid) while never asking about a deployment its bounds already rule out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.serving.capacity import grid_index, grid_rate
from tuner.search.cheapest import TIE_PROBES, cheapest, most_capacity
from tuner.search.space import Point


@dataclass(frozen=True)
class Fake:
    index: int
    point: Point
    rate_bound: float
    price: float
    capacity: float  # the truth the probes reveal
    limit: str = "slo"

    @property
    def gpus(self) -> int:
        return self.point.gpus_per_replica

    def cost(self, replicas: int) -> float:
        return replicas * self.gpus * self.price

    def deployment(self, replicas: int) -> Point:
        return replace(self.point, replicas=replicas)


@dataclass
class Table:
    candidates: list


class Probes:
    """Answers from the true capacities; counts and records every question."""

    def __init__(self) -> None:
        self.simulations = 0
        self.asked: list[tuple[int, float, int]] = []

    def __call__(self, candidate, rate, *, replicas=1, kind="deployment"):
        self.simulations += 1
        self.asked.append((candidate.index, rate, replicas))
        return type("R", (), {"meets": rate <= candidate.capacity * (1 + 1e-12)})()


def point(tp: int, weights: str = "bf16") -> Point:
    return Point(hardware="h100-sxm", tp=tp, pp=1, ep=1, replicas=1, weights=weights, kv="bf16",
                 max_num_seqs=64, chunked_prefill=True, max_num_batched_tokens=8192)  # fmt: skip


def table(rows: list[tuple[int, float, float, float]]) -> Table:
    """rows: (tp, price per GPU, capacity, bound)."""
    return Table(
        [
            Fake(index=i, point=point(tp), rate_bound=bound, price=price, capacity=capacity)
            for i, (tp, price, capacity, bound) in enumerate(rows)
        ]
    )


def test_two_gpus_beat_four_and_the_four_are_never_asked():
    t = table([(4, 1.0, 20.0, 22.0), (2, 1.0, 9.0, 10.0), (1, 1.0, 3.0, 3.5)])
    probes = Probes()
    out = cheapest(t, probes, rate=8.0, budget=8)
    # tp1 needs ceil(8 / 3.5) = 3 replicas by its bound (3 GPUs): asked first, at 3 and 4
    # replicas (it truly needs 3: 8 / 3 = 2.67 <= 3.0). tp2 (2 GPUs) would cost less, so it is
    # asked before: one replica serves 8 <= 9.
    assert out.best.candidate.index == 1 and out.best.replicas == 1 and out.best.cost == 2
    assert all(index != 0 for index, _, _ in probes.asked)  # tp4 never simulated
    assert out.ruled_out_by_bound >= 1 and out.proven


def test_a_refuted_candidate_climbs_one_replica_at_a_time():
    t = table([(1, 1.0, 2.5, 4.0)])  # the bound says 2 replicas for 8 req/s; the truth is 4
    probes = Probes()
    out = cheapest(t, probes, rate=8.0, budget=8)
    deployment_rates = [r for _, r, n in probes.asked if abs(r * n - 8.0) < 1e-9]
    assert [8.0 / r for r in deployment_rates] == [2, 3, 4]
    assert out.best.replicas == 4 and out.refuted == {0: 3}


def test_the_roomiest_of_equal_cost_wins():
    # Both cost 2 GPUs; the second has more capacity and its bound says it might.
    t = table([(2, 1.0, 8.5, 12.0), (2, 1.0, 11.0, 11.5)])
    out = cheapest(t, Probes(), rate=8.0, budget=4)
    assert out.best.candidate.index == 1
    assert out.best.capacity == grid_rate(grid_index(11.0))


def test_an_inadmissible_plan_is_passed_over():
    t = table([(1, 1.0, 9.0, 10.0), (2, 1.0, 9.0, 10.0)])
    out = cheapest(
        t, Probes(), rate=8.0, budget=4, admissible=lambda c: "no" if c.index == 0 else None
    )
    assert out.best.candidate.index == 1 and out.inadmissible == {0: "no"}


def test_a_simulation_budget_stops_the_search_unproven():
    t = table([(1, 1.0, 1.0, 10.0)] * 1 + [(1, 1.0, 1.0, 10.0)] * 5)
    out = cheapest(t, Probes(), rate=8.0, budget=4, max_simulations=3)
    assert not out.proven and "3 simulations" in out.stopped


def test_no_rate_fills_the_budget_with_the_most_capacity():
    t = table([(1, 1.0, 5.0, 6.0), (2, 1.0, 11.0, 12.0), (4, 1.0, 20.0, 30.0)])
    out = most_capacity(t, Probes(), budget=4)
    # tp1: 4 x 5 = 20; tp2: 2 x 11 = 22; tp4: 1 x 20 = 20
    assert out.best.candidate.index == 1 and out.best.replicas == 2
    assert out.best.capacity == grid_rate(grid_index(11.0))


rows = st.lists(
    st.tuples(
        st.sampled_from([1, 2, 4, 8]),
        st.sampled_from([1.0, 2.5]),
        st.floats(0.3, 40.0),
        st.floats(1.0, 1.6),  # bound = capacity x this
    ),
    min_size=1,
    max_size=14,
)


@settings(max_examples=150, deadline=None)
@given(rows=rows, rate=st.floats(0.5, 60.0), budget=st.sampled_from([4, 8, 16]))
def test_cheapest_equals_brute_force(rows, rate, budget):
    t = table([(tp, price, cap, cap * f) for tp, price, cap, f in rows])
    fast, full = Probes(), Probes()
    found = cheapest(t, fast, rate=rate, budget=budget)
    truth = cheapest(t, full, rate=rate, budget=budget, exhaustive=True, tie_capacity=False)
    costs = [
        c.cost(math.ceil(rate / c.capacity - 1e-12))
        for c in t.candidates
        if math.ceil(rate / c.capacity - 1e-12) * c.gpus <= budget
    ]
    if not costs:
        assert found.best is None and truth.best is None
        return
    assert found.best.cost == truth.best.cost == min(costs)
    assert fast.simulations <= full.simulations + TIE_PROBES + 40


@settings(max_examples=100, deadline=None)
@given(rows=rows, budget=st.sampled_from([4, 8, 16]))
def test_most_capacity_equals_brute_force(rows, budget):
    t = table([(tp, price, cap, cap * f) for tp, price, cap, f in rows])
    found = most_capacity(t, Probes(), budget=budget)
    truth = most_capacity(t, Probes(), budget=budget, exhaustive=True)
    if truth.best is None:
        assert found.best is None
        return
    assert found.best.total_capacity == truth.best.total_capacity


def test_a_candidate_that_cannot_launch_ranks_after_those_that_ran():
    """The report's "top candidates" listed a trial that does not fit in memory third, above
    deployments that ran: a candidate the engine's memory rule refuses comes after every one
    that was simulated, whatever its cost."""
    from types import SimpleNamespace

    from tuner.runners_up import alternatives

    # tp1 looks cheapest by its bound but truly serves 0.5 req/s a replica: it runs and misses
    t = table([(1, 0.1, 0.5, 3.0), (2, 1.0, 9.0, 10.0), (4, 1.0, 20.0, 22.0), (8, 0.1, 40, 44)])
    out = cheapest(
        t,
        Probes(),
        rate=8.0,
        budget=8,
        admissible=lambda c: "does not fit the engine's memory" if c.index == 3 else None,
    )
    search = SimpleNamespace(table=SimpleNamespace(candidates=t.candidates, unit="$/h"),
                             space=SimpleNamespace(gpus=8))  # fmt: skip
    reasons = [c.why_not for c in alternatives(search, out)]
    unlaunchable = reasons.index("does not fit the engine's memory")
    ran = [i for i, r in enumerate(reasons) if "replica(s) (" in r or "more for" in r]
    assert ran and all(i < unlaunchable for i in ran), reasons
