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
