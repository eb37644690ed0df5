"""The Pareto front of a run's trials over several objectives (--objectives).

A complete trial is on the front when no other complete trial is at least as good on every
objective and better on one. Infeasible trials (over a deployment limit) are not complete, so
they are never on it, as Optuna's `study.best_trials` leaves out trials its constraints reject.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from search.schema import TrialStatus, maximised


def front_ids(trials: pd.DataFrame, objectives: tuple[str, ...] | list[str]) -> set[int]:
    """The trial ids on the Pareto front of `trials` (trials.csv rows) over `objectives`."""
    if trials.empty or any(name not in trials for name in objectives):
        return set()
    done = trials[trials["status"] == TrialStatus.COMPLETE].dropna(subset=list(objectives))
    # Every objective turned into one to minimise.
    costs = np.column_stack(
        [
            -done[name].astype(float) if maximised(name) else done[name].astype(float)
            for name in objectives
        ]
    )
    ids = done["trial_id"].astype(int).to_numpy()
    return {int(ids[i]) for i in range(len(ids)) if not _dominated(costs, i)}


def _dominated(costs: np.ndarray, i: int) -> bool:
    no_worse = (costs <= costs[i]).all(axis=1)
    better = (costs < costs[i]).any(axis=1)
    return bool((no_worse & better).any())
