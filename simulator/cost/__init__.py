"""The step cost model: how long one engine step takes on one GPU type, and what fits.

A batch of configurations (``configs``) and a step's shape (``shapes``) meet the op table built
from the model's description (``ops``, ``optable``, ``comm``); the roofline (``roofline``) turns
each op into compute, memory or communication time; ``memory`` says what fits per GPU.
``step.StepModel`` packages all of it, ``step_fast`` caches it for the serving loop, and
``predict`` answers one configuration at one shape. Reads ``simulator.data``, never the
serving simulation."""
