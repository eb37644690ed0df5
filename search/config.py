"""A search's settings: the command line's options as one frozen record, with their defaults.

The defaults here are the only ones: the command line (search/cli.py) and the trial settings
(search/trial.py) take theirs from this record. Importing it imports no TensorFlow.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from datetime import datetime

from search.errors import UsageError
from search.schema import LIMITS, OBJECTIVES


@dataclass(frozen=True)
class SearchConfig:
    space: str = "transfer"
    data: str = "cats_and_dogs_filtered"
    labels: str | None = None  # a CSV of filename,label[,split] instead of class folders
    backend: str = "keras-tuner"  # the search back end, not the Keras backend
    # The Keras backend (search.keras_backend): None is Keras's own choice, from KERAS_BACKEND
    # or ~/.keras/keras.json, else TensorFlow.
    keras_backend: str | None = None
    algorithm: str = "random"
    max_trials: int = 10
    epochs: int = 10
    patience: int = 3
    warmup_epochs: int = 0
    clean_train_eval: str = "every"  # inference-mode training figures: every, best or off
    image_size: int = 160
    batch_size: int = 32
    objective: str = "val_accuracy"  # what ranks, prunes and picks the model (schema.OBJECTIVES)
    # Several (schema.ALL_OBJECTIVES) for Optuna's multi-objective search: the first validation
    # one among them becomes `objective`, and trials.csv gains a Pareto column (search.pareto).
    objectives: tuple[str, ...] = ()
    image_sizes: tuple[int, ...] = ()  # the input size searched per trial (hyperparameter)
    measure_deploy: bool = False  # TFLite size and latency of every complete trial
    # Deployment limits: a trial over one is "infeasible", never ranked (search/deploy.py).
    max_latency_ms: float | None = None
    max_size_kb: float | None = None
    max_params: int | None = None
    class_weight: str = "none"  # "balanced": each class weighs n / (classes x its count)
    seed: int = 42
    split_seed: int = 1337
    # The backbones' weights: imagenet, random, or MobileNetV2's file (search/weights.py);
    # backbone_weights holds the --weights NAME=VALUE pairs of single backbones.
    weights: str = "imagenet"
    backbone_weights: tuple[str, ...] = ()
    backbones: tuple[str, ...] = ()  # what transfer chooses among; (): MobileNetV2 alone
    name: str | None = None
    runs_dir: str = "runs"
    resume: bool = False
    tensorboard: bool = False
    verbose: bool = False
    quiet: bool = False  # only warnings and the result: no run line, no line per trial
    max_consecutive_failures: int = 3
    with_baselines: bool = False
    sampler: str = "auto"  # what the installed Optuna creates by default
    # Random trials before a model-based sampler (Optuna's TPE, GP, CMA-ES; Keras Tuner's
    # bayesian oracle) models the results; None: the library's own default.
    startup_trials: int | None = None
    pruner: str = "median"
    storage: str | None = None
    workers: int = 1
    heartbeat: int = 60
    # Seconds between a trial's epoch checkpoints (search/checkpoint.py); 0: every epoch,
    # None: none.
    checkpoint_every: float | None = 60.0
    enqueue: str | None = None
    fix: tuple[str, ...] = ()  # NAME=VALUE pins (search.fixed)
    cache_dir: str | None = None
    no_feature_cache: bool = False
    mixed_precision: str = "auto"
    jit: str = "auto"
    gpu_memory_mb: int | None = None  # per process, on each GPU it sees (search.devices)
    # MiB; 0 never restarts. The CLI's default is 256: only a command can be started again.
    max_memory_growth: int = 0
    confirm_top: int = 0  # finalists trained again with confirm_seeds fresh seeds (search.confirm)
    confirm_seeds: int = 2
    refit: bool = False  # the best configuration trained again on training + validation images
    allow_changed_space: bool = False  # resume a user space whose file changed since the start
    worker: bool = False  # set in the processes that --workers starts
    worker_index: int = 0  # offsets the sampler's seed, so workers do not propose alike

    def __post_init__(self):
        # From argparse or run.json: lists.
        for listed in ("fix", "objectives", "image_sizes", "backbones", "backbone_weights"):
            object.__setattr__(self, listed, tuple(getattr(self, listed)))
        if self.objectives:
            object.__setattr__(self, "objective", self._ranking_objective())
        if self.image_sizes and self.image_size not in self.image_sizes:
            object.__setattr__(self, "image_size", self._first_image_size())
        if self.name is None:  # named once, so every message and path agrees
            object.__setattr__(self, "name", f"{self.space}-{datetime.now():%Y%m%d-%H%M%S}")

    def _ranking_objective(self) -> str:
        """With --objectives, what ranks the trials and picks best_model.keras: the first
        validation objective listed; an --objective given besides must be among them."""
        ranking = next((name for name in self.objectives if name in OBJECTIVES), None)
        if ranking is None:
            raise UsageError(
                f"--objectives {','.join(self.objectives)}: name a validation objective too "
                f"({', '.join(OBJECTIVES)}), or the front needs no training"
            )
        if self.objective not in (SearchConfig.objective, *self.objectives):
            raise UsageError(
                f"--objective {self.objective} is not among --objectives "
                f"{','.join(self.objectives)}; add it there or leave --objective out"
            )
        return self.objective if self.objective in self.objectives else ranking

    def _first_image_size(self) -> int:
        """With --image-sizes, --image-size is the size tried first (the hyperparameter's
        default): the largest unless it names one of them."""
        if self.image_size != SearchConfig.image_size:
            raise UsageError(
                f"--image-size {self.image_size} is not among --image-sizes "
                f"{','.join(map(str, self.image_sizes))}; it names the size tried first"
            )
        return max(self.image_sizes)

    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def measures_deploy(self) -> bool:
        """Whether every complete trial's TFLite size and latency are measured: asked for, or
        needed by a limit or an objective (the parameter count needs no conversion)."""
        needed = {*self.limits(), *self.objectives} & {"latency_ms", "tflite_kb"}
        return self.measure_deploy or bool(needed)

    def limits(self) -> dict[str, float]:
        """The deployment limits set, by the trials.csv column each bounds."""
        return {
            column: getattr(self, option)
            for option, column in LIMITS.items()
            if getattr(self, option) is not None
        }

    def run_name(self) -> str:
        return self.name


def config_defaults() -> dict[str, object]:
    """Every setting's default, by field name (the command line's destination names)."""
    return {f.name: f.default for f in fields(SearchConfig) if f.default is not MISSING}
