"""`--confirm-top K --confirm-seeds S`: the K best configurations trained again with S fresh seeds.

On a few thousand images a configuration's validation accuracy moves by several points with the
seed alone (bench/README.md explains six baselines by it), so a ranking of single runs can crown
luck. Keras Tuner's `executions_per_trial` trains every trial several times; AutoKeras keeps one
run. Here only the finalists pay: each of the K best trials is trained S more times, each run in
a store of its own under RUNDIR/confirm/ (so an interrupted confirmation resumes run by run), and
the ranking follows the mean validation accuracy of all S + 1 runs. The exported model is the
winning configuration's run with the highest validation accuracy among those whose model is
kept; run.json records which.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import keras_tuner as kt
import pandas as pd

from search.announce import TrialAnnouncer
from search.fixed import check_enqueued, hyperparameters_of
from search.schema import TrialStatus, trial_hyperparameters
from search.store import RunStore, rank_trials
from search.trial import TrialRunner
from search.trial_edge import TrialRequest
from spaces import declared_space

CONFIRM_DIR = "confirm"
SEED_STRIDE = 100_003  # a prime: confirmation seeds never meet the search's seed + trial id


def trial_values(trial: pd.Series, declared: kt.HyperParameters) -> dict:
    """A stored trial's active values, typed as the space declares them (trials.csv gives an
    integer column with empty cells back as floats); Hyperband's bookkeeping left out."""
    values = trial_hyperparameters(trial)
    return check_enqueued([values], declared, {}, source=f"trial {trial.name}")[0]


def _run_store(run_dir: Path, trial_id: int, run: int) -> RunStore:
    return RunStore(run_dir / CONFIRM_DIR / f"trial-{trial_id}-seed-{run}")


def _confirmation_run(
    runner: TrialRunner, trial_id: int, values: dict, *, run: int, seed: int
) -> dict:
    """Run `run` of a finalist with `seed`, or what an earlier process left of it."""
    store = _run_store(runner.store.run_dir, trial_id, run)
    done = store.completed(trial_id) if store.trials_csv.exists() else None
    if done is None:
        store.create()
        settings = replace(runner.settings, seed=seed - trial_id)  # the runner adds the id
        again = TrialRunner(
            runner.space,
            runner.ctx,
            runner.data,
            store=store,
            settings=settings,
            announcer=TrialAnnouncer(
                store, announce_as=f"confirm trial {trial_id} run {run} (seed {seed})"
            ),
            hooks=runner.hooks,
            features=runner.features,
            reuse_heads=False,  # a fresh seed for both phases, not the finalist's first stage
        )
        again.run(TrialRequest(trial_id, hyperparameters_of(values)))
        done = store.completed(trial_id)
    row = {"trial_id": trial_id, "run": run, "seed": seed}
    if done is None:
        return row | {"status": TrialStatus.FAILED}
    return row | {"status": TrialStatus.COMPLETE, **done[["val_accuracy", "val_loss"]].to_dict()}


def confirm_top(
    runner: TrialRunner, top: int, seeds: int, *, declared: kt.HyperParameters
) -> pd.DataFrame:
    """Train the `top` best trials `seeds` more times each; return every run of theirs, run 0
    being the search's own. Failed runs are listed and left out of the means."""
    finalists = rank_trials(runner.store.trials()).set_index("trial_id", drop=False).head(top)
    rows = []
    for trial_id, trial in finalists.iterrows():
        trial_id = int(trial_id)  # a plain int: Keras refuses a NumPy seed
        values = trial_values(trial, declared)
        own = {"trial_id": trial_id, "run": 0, "seed": runner.settings.seed + trial_id}
        figures = {"val_accuracy": trial["val_accuracy"], "val_loss": trial["val_loss"]}
        rows.append(own | {"status": TrialStatus.COMPLETE} | figures)
        for run in range(1, seeds + 1):
            seed = runner.settings.seed + trial_id + run * SEED_STRIDE
            rows.append(_confirmation_run(runner, trial_id, values, run=run, seed=seed))
    return pd.DataFrame(rows)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Per finalist: mean and standard deviation of its complete runs' validation accuracy
    (and mean validation loss, the tie-break), and how many runs that is."""
    complete = runs[runs["status"] == TrialStatus.COMPLETE]
    grouped = complete.groupby("trial_id")
    return pd.DataFrame(
        {
            "confirm_mean": grouped["val_accuracy"].mean(),
            "confirm_sd": grouped["val_accuracy"].std(ddof=1),
            "confirm_val_loss": grouped["val_loss"].mean(),
            "confirm_runs": grouped.size(),
        }
    ).reset_index()


def exported_run(runs: pd.DataFrame, winner: int, best_trial_id: int | None) -> int:
    """The winner's run whose model is exported: its highest validation accuracy (then lowest
    loss) among the runs that kept a model: every confirmation run, and run 0 only when the
    search's best trial was this one (the search keeps no other trial's model)."""
    own = runs[(runs["trial_id"] == winner) & (runs["status"] == TrialStatus.COMPLETE)]
    if best_trial_id != winner:
        own = own[own["run"] != 0]
    ordered = own.sort_values(["val_accuracy", "val_loss", "run"], ascending=[False, True, True])
    return int(ordered.iloc[0]["run"])


def confirm_finalists(runner: TrialRunner, top: int, seeds: int) -> dict | None:
    """Confirm the `top` best trials with `seeds` more runs each, rank them by their mean, and
    make the winner's best kept run best_model.keras. Returns what run.json records of it;
    None when no trial completed."""
    store = runner.store
    best = store.best_trial()
    if best is None:
        return None
    declared = declared_space(runner.space, runner.ctx)
    runs = confirm_top(runner, top, seeds, declared=declared)
    store.set_confirmation(summarise(runs), runs)
    winner = int(store.best_trial()["trial_id"])
    run = exported_run(runs, winner, int(best["trial_id"]))
    if run:
        kept = _run_store(store.run_dir, winner, run)
        trial = store.trials().set_index("trial_id").loc[winner]
        store.adopt_best(kept.best_model_path, winner, trial_values(trial, declared))
        # The report's mistakes are best_model.keras's: its validation predictions go with it.
        store.save_predictions(winner, "validation", kept.predictions(winner, "validation"))
    exported = runs[(runs["trial_id"] == winner) & (runs["run"] == run)].iloc[0]
    return {
        "top": top,
        "seeds": seeds,
        "winner": winner,
        "exported_run": run,
        "exported_seed": int(exported["seed"]),
    }
