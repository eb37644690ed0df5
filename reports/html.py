"""The run report: a ranked leaderboard rendered from the run store alone."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from search.store import HP_PREFIX, RunStore, rank_trials

LEADERBOARD_COLUMNS = [
    "rank",
    "trial_id",
    "val_accuracy",
    "gap",
    "val_loss",
    "train_accuracy",
    "best_epoch",
    "test_accuracy",
    "duration_s",
    "n_params",
]


def leaderboard(trials: pd.DataFrame) -> pd.DataFrame:
    """Complete trials ranked best first, with their hyperparameters."""
    ranked = rank_trials(trials).reset_index(drop=True)
    ranked.insert(0, "rank", range(1, len(ranked) + 1))
    hp = [c for c in ranked.columns if c.startswith(HP_PREFIX)]
    return ranked[LEADERBOARD_COLUMNS + hp]


def write_report(run_dir: Path) -> Path:
    """Write report.html and leaderboard.csv into `run_dir` and return the report's path."""
    store = RunStore(run_dir)
    trials = store.trials()
    board = leaderboard(trials)
    board.to_csv(store.run_dir / "leaderboard.csv", index=False)
    env = Environment(loader=PackageLoader("reports"), autoescape=select_autoescape(["html"]))
    html = env.get_template("report.html").render(
        info=store.read_run_info(),
        board=board,
        failed=trials[trials["status"] == "failed"],
        counts=trials["status"].value_counts().to_dict(),
    )
    path = store.run_dir / "report.html"
    path.write_text(html, encoding="utf-8")
    return path
