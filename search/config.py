"""A search's settings: the command line's options as one frozen record, with their defaults.

The defaults here are the only ones: the command line (search/cli.py) and the trial settings
(search/trial.py) take theirs from this record. Importing it imports no TensorFlow.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from datetime import datetime

from search.schema import LIMITS


@dataclass(frozen=True)
class SearchConfig:
    space: str = "transfer"
    data: str = "cats_and_dogs_filtered"
    labels: str | None = None  # a CSV of filename,label[,split] instead of class folders
    backend: str = "keras-tuner"
    algorithm: str = "random"
    max_trials: int = 10
    epochs: int = 10
    patience: int = 3
    warmup_epochs: int = 0
    clean_train_eval: str = "every"  # inference-mode training figures: every, best or off
    image_size: int = 160
    batch_size: int = 32
    objective: str = "val_accuracy"  # what ranks, prunes and picks the model (schema.OBJECTIVES)
    measure_deploy: bool = False  # TFLite size and latency of every complete trial
    # Deployment limits: a trial over one is "infeasible", never ranked (search/deploy.py).
    max_latency_ms: float | None = None
    max_size_kb: float | None = None
    max_params: int | None = None
    class_weight: str = "none"  # "balanced": each class weighs n / (classes x its count)
    seed: int = 42
    split_seed: int = 1337
    weights: str = "imagenet"
    name: str | None = None
    runs_dir: str = "runs"
    resume: bool = False
    tensorboard: bool = False
    verbose: bool = False
    quiet: bool = False  # only warnings and the result: no run line, no line per trial
    max_consecutive_failures: int = 3
    with_baselines: bool = False
    sampler: str = "tpe"
    pruner: str = "median"
    storage: str | None = None
    workers: int = 1
    heartbeat: int = 60
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
        object.__setattr__(self, "fix", tuple(self.fix))  # from argparse or run.json: a list
        if self.name is None:  # named once, so every message and path agrees
            object.__setattr__(self, "name", f"{self.space}-{datetime.now():%Y%m%d-%H%M%S}")

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
