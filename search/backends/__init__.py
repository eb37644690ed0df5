"""Back ends turn a space into trials; all of them train through `search.trial.TrialRunner`.

Adding a back end: one module here with a `search(...)` function, and its name in BACKENDS.
"""

BACKENDS = {
    "keras-tuner": "Keras Tuner oracles (random, bayesian, hyperband, grid)",
}
