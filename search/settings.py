"""How every trial of a run trains: `TrainSettings`, whose defaults are the search's."""

from __future__ import annotations

from dataclasses import dataclass, fields

from search.config import SearchConfig

CLEAN_EVAL = ("every", "best", "off")  # --clean-train-eval: after every epoch, once at the end


@dataclass(frozen=True)
class TrainSettings:
    """How every trial of a run trains; the defaults are the search's (SearchConfig)."""

    epochs: int = SearchConfig.epochs
    patience: int = SearchConfig.patience
    batch_size: int = SearchConfig.batch_size
    seed: int = SearchConfig.seed
    verbose: bool = SearchConfig.verbose
    tensorboard: bool = SearchConfig.tensorboard
    jit: str = SearchConfig.jit  # XLA: "auto" (Keras's choice), "on" or "off"
    precision: str = "float32"  # Keras dtype policy: "float32" or "mixed_float16"
    # Epochs 1..N are never judged nor kept (Keras's start_from_epoch).
    warmup_epochs: int = SearchConfig.warmup_epochs
    clean_train_eval: str = SearchConfig.clean_train_eval  # one of CLEAN_EVAL
    objective: str = SearchConfig.objective  # one of schema.OBJECTIVES
    class_weight: str = SearchConfig.class_weight  # "none" or "balanced"
    objectives: tuple[str, ...] = SearchConfig.objectives  # --objectives (Optuna), or none
    limits: tuple[tuple[str, float], ...] = ()  # (column, limit): SearchConfig.limits()
    # A trial's state is saved at an epoch's end at most this often (search/checkpoint.py).
    checkpoint_every: float | None = SearchConfig.checkpoint_every

    @classmethod
    def of(cls, config: SearchConfig, precision: str) -> TrainSettings:
        """A search's settings for its trials, at the dtype policy its devices chose."""
        own = ("precision", "limits")
        shared = {f.name: getattr(config, f.name) for f in fields(cls) if f.name not in own}
        return cls(**shared, precision=precision, limits=tuple(config.limits().items()))
