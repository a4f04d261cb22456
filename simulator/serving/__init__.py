"""The serving simulation: requests arriving over time against an engine's scheduler, each step
costed by ``simulator.cost``.

``simulate.simulate`` runs a workload through continuous (``scheduler``) or static
(``static_batching``) batching, with paged KV blocks (``decodes``, ``decode_runs``) and
speculative decoding (``speculative``), and summarizes it (``results``, ``timeline``).
``capacity`` finds the highest rate that meets the SLOs; ``bounds`` bounds it in closed form
for thousands of configurations at once."""
