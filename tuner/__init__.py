"""rooftune's search side: the search space, Optuna studies, deployment plans, engine configs,
the report and the ``tune`` command. Imports the simulator; never torch at import time."""
