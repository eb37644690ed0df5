"""What the console says of trials: a trial is named by its id, as in trials.csv, the report,
the result line and `export --trial N`; the count against the budget stands beside it."""

from __future__ import annotations

from search.console import log
from search.schema import TrialStatus
from search.store import RunStore
from search.trial_edge import TrialResult


class TrialAnnouncer:
    """Names trials on the live line and prints one line per finished trial. `max_trials` is
    the budget shown ("trial 4 (5/10)"), None where there is none to show (Hyperband);
    `announce_as` names a trial trained outside a search (a confirmation run)."""

    def __init__(
        self, store: RunStore, *, max_trials: int | None = None, announce_as: str | None = None
    ) -> None:
        self.store, self.max_trials, self.announce_as = store, max_trials, announce_as

    def label(self, trial_id: int, *, in_progress: bool = True) -> str:
        """ "trial ID (i/N)": the trial being trained, or the one just recorded, as the i-th
        of the run's N."""
        if self.announce_as:
            return self.announce_as
        if not self.max_trials:
            return f"trial {trial_id}"
        count = self.store.finished_count() + (1 if in_progress else 0)
        return f"trial {trial_id} ({count}/{self.max_trials})"

    def announce(self, result: TrialResult) -> None:
        head = f"{self.label(result.trial_id, in_progress=False)} {result.status}"
        if result.status not in (TrialStatus.COMPLETE, TrialStatus.PRUNED):
            log.info(f"{head} {result.error} ({result.duration_s:.1f}s)")
            return
        best = self.store.best_trial()
        best_text = "-" if best is None else f"{best['val_accuracy']:.3f}"
        gap = (
            f"gap_fit={result.gap_fit:+.3f}"
            if result.gap_clean is None
            else f"gap_clean={result.gap_clean:+.3f}"
        )
        deployed = (
            f" {result.latency_ms:.2f}ms {result.tflite_kb:.0f}KB"
            if result.latency_ms is not None
            else ""
        )
        log.info(
            f"{head} val_acc={result.val_accuracy:.3f} {gap}{deployed} "
            f"best={best_text} ({result.duration_s:.1f}s)"
        )
