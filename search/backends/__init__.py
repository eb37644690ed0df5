"""Back ends turn a space into trials; all of them train through `search.trial.TrialRunner`.

Adding a back end: one module here with a `search(...)` function, and its name in BACKENDS.
The option values live here so that the command line can list them without importing a back end.
"""

BACKENDS = {
    "keras-tuner": "Keras Tuner oracles (random, bayesian, hyperband, grid)",
    "optuna": "Optuna samplers and pruners on a persistent study (SQLite or PostgreSQL)",
}
ALGORITHMS = ("random", "bayesian", "hyperband", "grid")
SAMPLERS = ("tpe", "random", "cmaes", "gp", "grid")
PRUNERS = ("median", "hyperband", "successive-halving", "none")
# Samplers whose module Optuna imports only when it first samples: checked before any trial.
SAMPLER_NEEDS = {
    "cmaes": ("cmaes", "pip install cmaes"),
    "gp": ("torch", "pip install -e '.[gp]' for PyTorch"),
}
# An Optuna grid is materialised whole (GridSampler lists every point): a larger one is refused.
GRID_MAX_POINTS = 10_000
