"""Every replica configuration the search may choose, each with the bound that orders it.

A *candidate* is one replica configuration: a point of the space with one replica (GPU type,
tp / pp / ep, quantization, batching knobs, speculative decoding). ``build_candidates`` takes
the pruning pass (``prune.py``: invalid, does not fit, SLO-hopeless on the step model alone) and,
for each surviving configuration and each speculative option, the capacity bound of
``simulator.serving.bounds``: the request rate one replica cannot exceed within the SLOs. A candidate
with a zero bound cannot meet the SLOs at any rate and is ruled out here, before any simulation.

The price of a candidate is per GPU-hour under ``--objective cost`` when every GPU offered has a
list price; otherwise every GPU costs 1 and the search minimizes the GPU count.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from simulator.serving.bounds import LIMITS, Drafter, capacity_bounds
from tuner.search.space import Point

__all__ = ["Candidate", "CandidateTable", "build_candidates", "candidate_for"]


@dataclass(frozen=True)
class Candidate:
    """One replica configuration and what the step model says of it."""

    index: int  # position in the table
    point: Point  # replicas = 1
    rate_bound: float  # requests/s one replica cannot exceed within the SLOs
    limit: str  # what sets the bound (simulator.serving.bounds.LIMITS)
    price: float  # per GPU-hour (1.0 when the search counts GPUs)
    kv_blocks: int  # KV-cache blocks of one replica (draft model's share taken out)
    token_budget: int  # tokens per iteration, all micro-batches

    @property
    def gpus(self) -> int:
        return self.point.gpus_per_replica

    def cost(self, replicas: int) -> float:
        return replicas * self.gpus * self.price

    def deployment(self, replicas: int) -> Point:
        return replace(self.point, replicas=replicas)

    @property
    def schedule_group(self) -> tuple:
        """Candidates in one group differ only in batching knobs: the same step times, so a
        run of one is the run of another whenever the limits allow (``EngineLimits``)."""
        p = self.point
        return (p.hardware, p.tp, p.pp, p.ep, p.weights, p.kv, p.spec_method, p.spec_tokens)


@dataclass
class CandidateTable:
    """The candidates, and how many configurations the step model ruled out and why."""

    candidates: list[Candidate]
    ruled_out: dict[str, int] = field(default_factory=dict)
    unit: str = "GPUs"  # what ``Candidate.cost`` counts: "$/h" or "GPUs"

    def __len__(self) -> int:
        return len(self.candidates)


def build_candidates(search, *, priced: bool) -> CandidateTable:
    """Candidates of ``search`` (a ``tuner.search.run.Search``): pruned keys x speculative options,
    each with its capacity bound; ``priced`` costs GPUs at their list price."""
    space, pruned = search.space, search.pruned
    options = space.spec_options()
    drafters = [Drafter.of(space.speculative_option(method, tokens)) for method, tokens in options]
    counts = pruned.counts()
    ruled_out = {name: n * len(options) for name, n in counts.items() if name != "ok" and n}
    candidates: list[Candidate] = []
    survivors = pruned.survivors()
    for hardware in space.hardware:
        rows = [int(i) for i in survivors if pruned.keys[i].hardware == hardware.name]
        if not rows:
            continue
        keys = [pruned.keys[i] for i in rows for _ in options]
        choice = np.tile(np.arange(len(options)), len(rows))
        bounds = capacity_bounds(
            space.model,
            hardware,
            space.config_arrays(keys),
            search.shape,
            search.slos,
            drafters=drafters,
            drafter=choice,
        )
        price = hardware.price_per_hour if priced and hardware.price_per_hour else 1.0
        for row, key in enumerate(keys):
            method, tokens = options[choice[row]]
            rate = float(bounds.rate_per_s[row])
            if rate <= 0:
                name = "cannot run" if LIMITS[bounds.limit[row]] == "cannot run" else "slo"
                ruled_out[name] = ruled_out.get(name, 0) + 1
                continue
            point = Point.from_key(key, 1, spec_method=method, spec_tokens=tokens)
            candidates.append(
                Candidate(
                    index=len(candidates),
                    point=point,
                    rate_bound=rate,
                    limit=LIMITS[bounds.limit[row]],
                    price=float(price),
                    kv_blocks=int(bounds.kv_blocks[row]),
                    token_budget=point.max_num_batched_tokens * point.pp,
                )
            )
    return CandidateTable(
        candidates=candidates, ruled_out=ruled_out, unit="$/h" if priced else "GPUs"
    )


def candidate_for(search, point: Point, *, index: int, price: float) -> Candidate | None:
    """A candidate for any point (knobs off the grid too), bounded like the table's; None when
    it cannot run or cannot meet the SLOs at any rate."""
    key = point.replica_key
    drafter = Drafter.of(search.space.speculative(point))
    bounds = capacity_bounds(
        search.space.model,
        search.space.hardware_spec(point.hardware),
        search.space.config_arrays([key]),
        search.shape,
        search.slos,
        drafters=[drafter],
    )
    rate = float(bounds.rate_per_s[0])
    if rate <= 0:
        return None
    return Candidate(
        index=index,
        point=point,
        rate_bound=rate,
        limit=LIMITS[bounds.limit[0]],
        price=price,
        kv_blocks=int(bounds.kv_blocks[0]),
        token_budget=point.max_num_batched_tokens * point.pp,
    )
