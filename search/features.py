"""Frozen-backbone feature cache: run a frozen base over the images once, then train heads.

A `transfer` trial with a frozen base and no augmentation in front of it feeds the same base the
same pixels in every epoch of every trial, so the base's output is computed once per
`feature_key` and every such trial trains only its head on those features (as the TF
transfer-learning tutorial's "feature extraction" does). The features are kept in memory for the
next trial and on disk in the cache folder (memory-mapped .npy files), for resumed runs and
other runs sharing the folder.

The model a trial keeps is still the full model: the head trained here is a view of the model's
own head layers (a `keras.Model` from the base's output tensor, or from the output of the global
pooling that follows it, to the model's output), so every weight it learns is the full model's,
and the stored, exported and test-scored model takes raw images through augmentation,
preprocessing, base and head. The pooling has no weights and no randomness, so it too runs once
per image: the head then trains on 1280 numbers per image instead of 5 x 5 x 1280.

Trials with augmentation are trained on raw images as before: random augmentation changes the
base's input, and so its features, in every epoch. Caching K fixed augmented views would train a
different model (K fixed distortions instead of fresh ones) at K forward passes per image for
each augmentation setting, and the spaces' augmentation settings rarely repeat between trials.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from search import compat
from search.atomic import atomic_folder, atomic_write
from search.console import log
from search.data import ImageData
from search.devices import is_out_of_memory
from search.inputs import evaluation_dataset
from spaces import BACKBONE

KEY_VERSION = "features-v2"
# Layers that may sit between the image and the base without making its features vary:
# deterministic and without trainable weights.
PASS_THROUGH = (keras.layers.InputLayer, keras.layers.Rescaling)
SPLITS = ("train", "validation")  # the test split is only ever scored with the full model


# Layers that may directly follow the base and still run once per image, not once per epoch:
# deterministic and weightless. A global pooling makes the head's input 25 to 50 times smaller.
POOLING = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)


@dataclass
class FrozenSplit:
    """A model cut at its frozen base: `front` maps images to the base's features, `pool` (when
    the base feeds only a global pooling) features to pooled features, and `head` the pooled
    features, or the features without one, to predictions. All share the model's own layers
    and weights."""

    model: keras.Model
    front: keras.Model
    head: keras.Model
    pool: keras.Model | None = None


def split_frozen_base(model: keras.Model) -> FrozenSplit | None:
    """The model cut at its frozen base, or None when the base's features can change between
    epochs: no base, a trainable base, a base used twice, or a random or trainable layer
    (augmentation) in front of it."""
    try:
        base = model.get_layer(BACKBONE)
    except ValueError:
        return None
    if base.trainable or compat.call_count(base) != 1:
        return None
    features = compat.call_output(base)  # in the outer model's graph
    front = keras.Model(model.inputs, features, name="frozen_front")
    if any(layer is not base and not isinstance(layer, PASS_THROUGH) for layer in front.layers):
        return None
    pooled = _pooled(base)
    if pooled is None:
        return FrozenSplit(model, front, keras.Model(features, model.outputs, name="head"))
    pool = keras.Model(features, pooled, name="pool")
    return FrozenSplit(model, front, keras.Model(pooled, model.outputs, name="head"), pool)


def _pooled(base: keras.layers.Layer) -> keras.KerasTensor | None:
    """The output of the global pooling that is the base's only consumer, else None."""
    consumers = compat.consumers(base)
    if len(consumers) != 1 or not isinstance(consumers[0].operation, POOLING):
        return None
    return consumers[0].output


def _pooling_signature(pool: keras.Model) -> str:
    layers = pool.layers[1:]  # after its input layer
    return json.dumps([_layer_signature(layer) for layer in layers], sort_keys=True, default=str)


def _weights_digest(layer: keras.layers.Layer) -> str:
    digest = hashlib.sha256()
    for weight in layer.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{weight.path}|{value.dtype}|{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _layer_signature(layer: keras.layers.Layer) -> dict:
    """A layer's class and configuration without its name, which Keras numbers per session."""
    config = {k: v for k, v in layer.get_config().items() if k != "name"}
    return {"class": type(layer).__name__, "config": config}


def feature_key(split: FrozenSplit, data_fingerprint: str) -> str:
    """What the features depend on: the images (files, labels, size), every layer in front of
    the base (preprocessing, dtype policy), the base's shapes (backbone, alpha, image size) and
    the exact values of its weights (so a different weights file is a different key)."""
    base = split.model.get_layer(BACKBONE)
    description = {
        "version": KEY_VERSION,
        "data": data_fingerprint,
        "front": [_layer_signature(layer) for layer in split.front.layers if layer is not base],
        "base": {
            "class": type(base).__name__,
            "input_shape": list(split.front.inputs[0].shape),
            "output_shape": list(split.front.outputs[0].shape),
            "dtype_policy": base.dtype_policy.name,
            "weights": _weights_digest(base),
        },
    }
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class FeatureCache:
    """Base features per key: the last used set in memory, every set on disk in `cache_dir`."""

    def __init__(self, data: ImageData, cache_dir: Path | None, batch_size: int = 64):
        self.data, self.cache_dir, self.batch_size = data, cache_dir, batch_size
        self._key: str | None = None
        self._features: dict[str, np.ndarray] = {}
        self._pooled: dict[str, dict[str, np.ndarray]] = {}  # per pooling, of the features above
        self._heads: dict[str, tuple[int, list[dict], list[np.ndarray]]] = {}

    def path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"features-{key}"

    def key(self, split: FrozenSplit) -> str:
        """The features' key on this run's images (hashing the base's weights: once a trial)."""
        return feature_key(split, self.data.fingerprint)

    def features(self, split: FrozenSplit, key: str) -> tuple[dict[str, np.ndarray], str]:
        """Train and validation inputs of `split`'s head: the base's features (whose key is
        `key`), pooled when the split has a pool, and where the features came from: "memory",
        "disk" or "computed"."""
        source = "memory"
        if key != self._key:
            path = self.path(key)
            features, source = self._load(path), "disk"
            if features is None:
                features, source = self._compute(split), "computed"
                if path is not None:
                    self._save(path, features)
            self._key, self._features, self._pooled = key, features, {}
        if split.pool is None:
            return self._features, source
        pooling = _pooling_signature(split.pool)
        if pooling not in self._pooled:
            self._pooled[pooling] = {
                name: split.pool.predict(array, batch_size=256, verbose=0)
                for name, array in self._features.items()
            }
        return self._pooled[pooling], source

    def _compute(self, split: FrozenSplit) -> dict[str, np.ndarray]:
        """The base's features of every split; out of memory, again at half the batch (kept
        for later passes), down to batch 1."""
        while True:
            try:
                return {name: self._predict(split, name) for name in SPLITS}
            except Exception as error:
                if self.batch_size == 1 or not is_out_of_memory(error):
                    raise
                self.batch_size //= 2
                log.info(f"feature pass: out of memory; retrying at batch {self.batch_size}")

    def _predict(self, split: FrozenSplit, name: str) -> np.ndarray:
        images = self.data.split(name)
        batches = evaluation_dataset(images.x, images.y, self.batch_size)
        return split.front.predict(batches, verbose=0)

    def _load(self, path: Path | None) -> dict[str, np.ndarray] | None:
        """Features from disk; None when absent, unreadable or not matching the images."""
        if path is None or not path.exists():
            return None
        try:
            features = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in SPLITS}
        except (OSError, ValueError):
            return None  # damaged: recomputed and replaced
        sizes_match = all(len(features[n]) == len(self.data.split(n)) for n in SPLITS)
        return features if sizes_match else None

    @staticmethod
    def _save(path: Path, features: dict[str, np.ndarray]) -> None:
        def write(tmp: Path) -> None:
            for name, array in features.items():
                np.save(tmp / f"{name}.npy", array)

        # Readers never see a half-written folder; an earlier copy here was damaged (_load).
        atomic_folder(path, write, replace=True)

    # Phase-one heads: a fine-tune trial starts from the head an earlier trial trained on the
    # same features with the same first-stage hyperparameters and training settings.
    @staticmethod
    def head_key(features_key: str, phase_one: dict, settings) -> str:
        description = {
            "features": features_key,
            "hyperparameters": phase_one,
            "settings": [settings.epochs, settings.patience, settings.batch_size],
        }
        if settings.warmup_epochs:  # only then, so the keys of heads cached before stay valid
            description["warmup_epochs"] = settings.warmup_epochs
        text = json.dumps(description, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def _head_paths(self, key: str) -> tuple[Path, Path] | None:
        if self.cache_dir is None:
            return None
        folder = self.cache_dir / "heads"
        return folder / f"{key}.weights.h5", folder / f"{key}.json"

    def save_head(self, key: str, split: FrozenSplit, *, trial_id: int, rows: list[dict]) -> None:
        """Keep a trained phase-one head (its weights and epoch rows) for later trials."""
        self._heads[key] = (trial_id, list(rows), split.head.get_weights())
        paths = self._head_paths(key)
        if paths is None:
            return
        weights, record = paths
        weights.parent.mkdir(parents=True, exist_ok=True)
        # Per process: workers training the same head may save it at once.
        atomic_write(weights, split.head.save_weights, per_process=True)
        # The record is written last: a head counts as saved only once it exists.
        text = json.dumps({"trial_id": trial_id, "rows": rows})
        atomic_write(record, lambda p: p.write_text(text, encoding="utf-8"), per_process=True)

    def load_head(self, key: str, split: FrozenSplit) -> tuple[int, list[dict]] | None:
        """Load a saved head into `split`'s head layers; its trial id and epoch rows, or None."""
        if key in self._heads:
            trial_id, rows, weights = self._heads[key]
            split.head.set_weights(weights)
            return trial_id, rows
        paths = self._head_paths(key)
        if paths is None or not paths[1].exists():
            return None
        try:
            record = json.loads(paths[1].read_text(encoding="utf-8"))
            split.head.load_weights(paths[0])
        except (OSError, ValueError, KeyError):
            return None  # damaged: this trial trains its own head
        return record["trial_id"], record["rows"]
