"""The first phase of a frozen-backbone trial on cached features: only the head trains, on the
base's outputs computed once per run (search/features.py), and a fine-tune trial may take the
head an earlier trial trained with the same first-stage values."""

from __future__ import annotations

from search.features import FeatureCache, FrozenSplit
from search.fitting import FitLoop
from search.judge import diverged
from search.runtime import get_runtime
from search.settings import TrainSettings
from search.trial_state import Phase, TrialFit
from spaces import Space

HEAD_STEPS_PER_EXECUTION = 32


class FrozenHeadTrainer:
    """Trains heads on `cache`'s features; `reuse_heads` False makes every trial train its own
    (a run that must train with its own seed: --confirm-top)."""

    def __init__(
        self,
        cache: FeatureCache,
        *,
        space: Space,
        loop: FitLoop,
        settings: TrainSettings,
        reuse_heads: bool = True,
    ) -> None:
        self.cache, self.space, self.loop = cache, space, loop
        self.settings, self.reuse_heads = settings, reuse_heads

    def train(
        self, frozen: FrozenSplit, hp, fit: TrialFit, *, initial_epoch: int, last: int
    ) -> None:
        """The first phase on the base's features. The head is the model's own, so the full
        model ends up with the weights it learns."""
        self.cache.data = fit.data  # with --image-sizes, the features' key holds the size
        key = self.cache.key(frozen)
        features, fit.features = self.cache.features(frozen, key)
        head_key = self.cache.head_key(key, self._phase_one_values(hp), self.settings)
        model = frozen.model
        # Compiled before a reused head returns too: what is measured at the end may run on it.
        frozen.head.compile(
            optimizer=model.optimizer,
            loss=model.loss,
            metrics=["accuracy"],
            # The same batches and updates, with fewer calls from Python: on features a step
            # takes less time than calling it does (PyTorch's Keras runs one per call).
            steps_per_execution=HEAD_STEPS_PER_EXECUTION
            if get_runtime().runs_steps_per_execution
            else 1,
        )
        fit.phase = Phase(frozen.head, features["train"], features["validation"])
        if self.reuse_heads and self.space.fine_tunes(hp) and initial_epoch == 0:
            reused = self.cache.load_head(head_key, frozen)
            if reused is not None:
                fit.head_from_trial, rows = reused
                for row in rows:
                    self.loop.replay(fit, row)
                return
        inputs = (features["train"], fit.data.train.y, features["validation"])
        self.loop.fit(
            frozen.head,
            hp,
            fit,
            phase="train",
            initial_epoch=initial_epoch,
            epochs=last,
            inputs=inputs,
        )
        if fit.rows and not diverged(fit.rows):
            self.cache.save_head(head_key, frozen, trial_id=fit.trial_id, rows=fit.rows)

    def _phase_one_values(self, hp) -> dict:
        return {k: v for k, v in hp.values.items() if k not in self.space.second_stage}
