"""The one training loop every back end calls: build, fit with early stopping, record, judge.

A trial's `best_epoch` is the epoch whose weights the trial keeps: the lowest validation loss,
restored by EarlyStopping(restore_best_weights=True). Every number is read at that epoch, so it
describes the model that would be exported. Training accuracy comes twice: `accuracy` (the
trial's `train_accuracy_fit`) is Keras's running figure during `fit`, with dropout and
augmentation active on weights that change through the epoch, as the documents plot it;
`train_accuracy_clean` and `train_loss_clean` measure the epoch's weights in inference mode on a
fixed sample of training images (search/clean_eval.py), so `gap_clean` compares like with like.

`TrialRunner` composes the parts: the fit loop (search/fitting.py), the frozen-feature head
(search/frozen_head.py), the second stage (search/second_stage.py), the clean evaluation
(search/clean_eval.py), epoch checkpoints (search/checkpoint.py), the memory guard
(search/memory_guard.py) and what the console says (search/announce.py). Back ends reach it
through search/trial_edge.py only.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Sequence

import keras

from search.announce import TrialAnnouncer
from search.checkpoint import TrialCheckpoints
from search.clean_eval import CleanEvaluation, clean_sample
from search.console import log
from search.data import ImageData, ImagesBySize
from search.devices import is_out_of_memory
from search.errors import find_write_fault, first_line
from search.features import FeatureCache, split_frozen_base
from search.fitting import FitLoop
from search.frozen_head import FrozenHeadTrainer
from search.inputs import evaluation_dataset
from search.judge import diverged, judge
from search.memory_guard import MemoryGuard
from search.schema import TrialStatus
from search.second_stage import fine_tune
from search.settings import TrainSettings
from search.store import RunStore
from search.trial_edge import RunView, TrialHook, TrialOutcome, TrialRequest, TrialResult
from search.trial_state import TrialFit
from spaces import IMAGE_SIZE, Space
from spaces.context import SpaceContext


class TrialRunner:
    """Trains one hyperparameter set of a space on the run's decoded images.

    `hooks` run on each trial before and after it is recorded (deployment figures and
    limits; the report's refresh: search.trial_edge.TrialHook); `features` caches a frozen
    base's outputs (and `reuse_heads` lets a fine-tune trial take an earlier trial's first
    stage); `images_at` holds the images per size for --image-sizes.
    """

    def __init__(
        self,
        space: Space,
        ctx: SpaceContext,
        data: ImageData,
        *,
        store: RunStore,
        settings: TrainSettings,
        announcer: TrialAnnouncer | None = None,
        memory: MemoryGuard | None = None,
        hooks: Sequence[TrialHook] = (),
        features: FeatureCache | None = None,
        reuse_heads: bool = True,
        images_at: ImagesBySize | None = None,
    ):
        self.space, self.ctx, self.data = space, ctx, data
        self.store, self.settings = store, settings
        self.announcer = announcer or TrialAnnouncer(store)
        self.memory = memory or MemoryGuard()
        self.hooks = list(hooks)
        self.features, self.images_at = features, images_at
        self.checkpoints = TrialCheckpoints(store.run_dir, settings.checkpoint_every)
        self.view = RunView(store, self.checkpoints, settings)
        self.clean = CleanEvaluation(
            mode=settings.clean_train_eval,
            sample=clean_sample(len(data.train), len(data.validation), settings.seed),
            num_classes=ctx.num_classes,
            warmup_epochs=settings.warmup_epochs,
        )
        self.loop = FitLoop(
            settings=settings,
            store=store,
            checkpoints=self.checkpoints,
            clean=self.clean,
            num_classes=ctx.num_classes,
            progress_label=self.announcer.label,
        )
        self.heads = (
            None
            if features is None
            else FrozenHeadTrainer(
                features, space=space, loop=self.loop, settings=settings, reuse_heads=reuse_heads
            )
        )

    def run(self, request: TrialRequest) -> TrialOutcome:
        """Train and record one trial. Failures are results, never exceptions."""
        start = time.perf_counter()
        fit, error, pruned = self._attempt(request, start=start)
        self.checkpoints.discard(request.trial_id)  # ended: only a trial cut off is continued
        model = fit.model
        result = judge(
            request.trial_id,
            fit.rows,
            error=error,
            seconds=fit.trained_s(),
            n_params=model.count_params() if model is not None else None,
            warmup_epochs=self.settings.warmup_epochs,
            clean=fit.clean,
        )
        result.batch_size = fit.batch_size
        result.features, result.head_from_trial = fit.features, fit.head_from_trial
        result.jit = fit.jit
        result.rss_mb = self.memory.after_trial()
        if pruned and result.status == TrialStatus.COMPLETE:
            result.status = TrialStatus.PRUNED
        for hook in self.hooks:
            hook.trained(result, model)
        self._record(result, fit, request)
        return TrialOutcome(result, model if result.status == TrialStatus.COMPLETE else None)

    def check_memory(self) -> None:
        """Raise Restart, between trials, when the process would likely outgrow
        --max-memory-growth in the next trial (search/memory_guard.py)."""
        self.memory.check()

    def _attempt(self, request: TrialRequest, *, start: float) -> tuple[TrialFit, str, bool]:
        """Train the trial; out of memory, halve the batch and try once more, as AutoKeras
        does. Returns what was trained, the error that ended it ("" for none), and whether
        the back end pruned it."""
        error, pruned, trial_id = "", False, request.trial_id
        for batch_size in (self.settings.batch_size, self.settings.batch_size // 2):
            fit = TrialFit(
                trial_id,
                self.data,
                rows=[],
                extra_callbacks=list(request.extra_callbacks),
                on_epoch=request.on_epoch,
                batch_size=batch_size,
                started=start,
            )
            self._start(trial_id, request.hp)
            try:
                self._train(request, fit)
                error = ""
            except request.prune_on:
                pruned = True
            except KeyboardInterrupt:
                self._interrupted(fit)
                raise
            except Exception as failure:  # any error in build or fit fails this trial only
                if find_write_fault(failure) is not None:
                    # The machine's fault, not the trial's: cut off, so a resume retries it.
                    with contextlib.suppress(Exception):  # the disk may refuse this row too
                        self._interrupted(fit)
                    raise
                error = first_line(failure)
                if is_out_of_memory(failure):
                    error = f"oom: {error}"
                    if batch_size > 1 and batch_size == self.settings.batch_size:
                        log.info(
                            f"trial {trial_id}: out of memory at batch {batch_size}; "
                            f"retrying once at batch {batch_size // 2}"
                        )
                        continue
            break
        return fit, error, pruned

    def _interrupted(self, fit: TrialFit) -> None:
        seconds = round(fit.trained_s(), 3)
        interrupted = {"status": TrialStatus.INTERRUPTED, "error": "interrupted"}
        self.store.finish_trial(fit.trial_id, interrupted | {"duration_s": seconds})

    def _start(self, trial_id: int, hp) -> None:
        """A clean slate for a trial: no graph or memory left from earlier ones, its own seed."""
        # Also runs gc.collect, and resets Keras's global dtype policy.
        keras.backend.clear_session(free_memory=True)
        keras.mixed_precision.set_global_policy(self.settings.precision)
        keras.utils.set_random_seed(self.settings.seed + trial_id)
        self.store.begin_trial(trial_id, hp.values)

    def _train(self, request: TrialRequest, fit: TrialFit) -> None:
        hp = request.hp
        fit.model = model = self.space.build(hp, self.ctx)
        fit.data = self._images_for(model, hp)
        if request.initial_weights is not None:
            with warnings.catch_warnings():  # the new optimizer has no state to restore yet
                warnings.simplefilter("ignore", UserWarning)
                model.load_weights(request.initial_weights)
        initial_epoch = request.initial_epoch
        last = initial_epoch + (request.epochs or self.settings.epochs)
        frozen = split_frozen_base(model) if self.heads is not None else None
        if frozen is None:
            first = self._resume(model, fit, request)
            self.loop.fit(
                model, hp, fit, phase="train", initial_epoch=first, epochs=last, saved=True
            )
        else:
            self.heads.train(frozen, hp, fit, initial_epoch=initial_epoch, last=last)
        second = self.space.fine_tune
        if fit.rows and not diverged(fit.rows) and second and second(hp, model):
            fine_tune(self.loop, fit, model=model, hp=hp)
        if fit.rows and not diverged(fit.rows):
            fit.clean = self.clean.of_kept(fit)
            batches = evaluation_dataset(fit.phase.val_x, fit.data.validation.y, fit.batch_size)
            fit.predictions = fit.phase.model.predict(batches, verbose=0)

    def _resume(self, model: keras.Model, fit: TrialFit, request: TrialRequest) -> int:
        """Go on from the checkpoint this trial, or the one it retries, left: its weights into
        the model, and its epochs told again to the store and to the back end's callbacks (the
        pruner, which may prune the trial there). Returns the epoch training starts from."""
        source = fit.trial_id if request.resume_from is None else request.resume_from
        fit.resumed = self.checkpoints.take(
            source, fit.trial_id, values=request.hp.values, batch_size=fit.batch_size
        )
        if fit.resumed is None:
            return request.initial_epoch
        fit.resumed.restore(model)
        log.info(f"trial {fit.trial_id}: goes on from its checkpoint at epoch {fit.resumed.epoch}")
        for row in fit.resumed.rows:
            self.loop.replay(fit, row)
            for callback in fit.extra_callbacks:
                callback.on_epoch_end(row["epoch"] - 1, dict(row))
        return fit.resumed.epoch

    def _images_for(self, model: keras.Model, hp) -> ImageData:
        """The images the trial trains on: with --image-sizes, those decoded at the size of its
        IMAGE_SIZE (cached features too: their key holds the size)."""
        if self.images_at is None:
            return self.data
        size = hp.values[IMAGE_SIZE]
        if model.input_shape[1:3] != (size, size):
            raise ValueError(
                f"the model takes {model.input_shape[1:3]} inputs, not the {size} px of its "
                f"{IMAGE_SIZE}: build it for ctx.image_size"
            )
        if size not in self.images_at:
            # Another size's images (and then features) are memory the run needs, not a leak.
            self.memory.expect_growth()
        self.data = self.images_at(size)
        return self.data

    def _record(self, result: TrialResult, fit: TrialFit, request: TrialRequest) -> None:
        """Store the trial's outcome: a complete one's model (staged before its row says
        complete, so the best complete trial always has its model; one that cannot be best is
        not saved at all) and validation predictions, then its row."""
        trial_id, complete = result.trial_id, result.status == TrialStatus.COMPLETE
        values = request.hp.values
        if complete and self.store.would_lead(trial_id, result.row()):
            self.store.stage_model(fit.model, trial_id)
        if complete:  # before its row says so, as its model is
            self.store.save_predictions(trial_id, "validation", fit.predictions)
        if request.on_result is not None:
            request.on_result(result, values)
        self.store.finish_trial(trial_id, result.row(), values)
        if complete:
            self.store.promote(trial_id, values)
        if len(self.settings.objectives) > 1:  # the front's models, for export --trial N
            self.store.keep_models(fit.model, trial_id, self.store.pareto_front())
        self.announcer.announce(result)
        for hook in self.hooks:
            hook.recorded(result)
