"""The search for the cheapest deployment that meets the SLOs.

``choices`` and ``space`` say what may be chosen; ``prune`` rules out, with the step model,
what cannot fit or cannot meet an SLO even alone; ``candidates`` bounds each survivor's
capacity; ``cheapest`` runs the branch-and-bound over deployments, confirming with request-level
simulations (``probe``) recorded as study trials (``trials``, ``study``); ``front`` and
``refine`` explore beyond the plan. ``run.run_search`` ties them together."""
