"""The frozen-backbone feature cache: honest keys, the same predictions, reuse across resumes."""

from __future__ import annotations

import shutil

import keras
import keras_tuner as kt
import numpy as np
import pytest
from conftest import link_images

from search.data import load_image_data
from search.features import FeatureCache, feature_key, split_frozen_base
from search.steps import SearchConfig, run_search
from search.store import RunStore
from search.trial import TrainSettings, TrialRunner
from search.trial_edge import TrialRequest
from spaces import get_space, transfer
from spaces.context import DEFAULT_BACKBONE, BackboneWeights, SpaceContext

NO_AUGMENTATION = {
    "flip": "none",
    "rotation": 0.0,
    "zoom": 0.0,
    "translation": 0.0,
    "contrast": 0.0,
}
NO_AUGMENTATION_FIX = tuple(f"{k}={v}" for k, v in NO_AUGMENTATION.items())


def transfer_hp(**values) -> kt.HyperParameters:
    """A transfer point without augmentation; the space's defaults fill the rest."""
    hp = kt.HyperParameters()
    hp.values.update(NO_AUGMENTATION | values)
    return hp


def transfer_model(ctx: SpaceContext, **values) -> keras.Model:
    keras.utils.set_random_seed(0)  # the same random base when ctx.backbone.weights is None
    return transfer.build(transfer_hp(**values), ctx)


def key_of(model: keras.Model, fingerprint: str = "data") -> str:
    return feature_key(split_frozen_base(model), fingerprint)


def test_augmentation_or_a_trainable_base_is_never_cached(weights_file):
    ctx = SpaceContext(32, 2, DEFAULT_BACKBONE.with_weights(str(weights_file)))
    assert split_frozen_base(transfer_model(ctx)) is not None
    for name, value in [("flip", "horizontal"), ("rotation", 0.1), ("zoom", 0.1)]:
        assert split_frozen_base(transfer_model(ctx, **{name: value})) is None, name
    model = transfer_model(ctx)
    model.get_layer("backbone").trainable = True
    assert split_frozen_base(model) is None
    assert split_frozen_base(get_space("scratch").build(kt.HyperParameters(), ctx)) is None


def test_the_key_changes_with_every_input_of_the_features(weights_file, tmp_path):
    ctx = SpaceContext(32, 2, DEFAULT_BACKBONE.with_weights(str(weights_file)))
    base = key_of(transfer_model(ctx))
    assert key_of(transfer_model(ctx)) == base  # stable between builds
    assert key_of(transfer_model(ctx), "other data") != base
    larger = SpaceContext(48, 2, DEFAULT_BACKBONE.with_weights(str(weights_file)))
    assert key_of(transfer_model(larger)) != base
    random_init = SpaceContext(32, 2, DEFAULT_BACKBONE.with_weights(None))
    narrow = BackboneWeights("mobilenet_v2", None, (("alpha", 0.35),))
    assert key_of(transfer_model(SpaceContext(32, 2, narrow))) != key_of(
        transfer_model(random_init)
    )
    # Preprocessing: the same base behind another rescaling.
    model = transfer_model(ctx)
    model.get_layer("mobilenet_v2_preprocess").offset = 0.0
    assert key_of(model) != base
    # Weights: a copy of the file has the same key, a file with other values another one.
    copy = tmp_path / "copy.weights.h5"
    shutil.copy(weights_file, copy)
    copied = SpaceContext(32, 2, DEFAULT_BACKBONE.with_weights(str(copy)))
    assert key_of(transfer_model(copied)) == base
    other = transfer_model(ctx).get_layer("backbone")
    other.set_weights([w * 1.01 for w in other.get_weights()])
    changed = tmp_path / "changed.weights.h5"
    other.save_weights(changed)
    rewritten = SpaceContext(32, 2, DEFAULT_BACKBONE.with_weights(str(changed)))
    assert key_of(transfer_model(rewritten)) != base


def test_the_data_fingerprint_follows_the_files(tmp_path):
    folder = link_images(tmp_path / "data", {"train": 3, "validation": 2})
    first = load_image_data(folder, 32).fingerprint
    assert load_image_data(folder, 32).fingerprint == first
    assert load_image_data(folder, 48).fingerprint != first
    photo = next((folder / "train" / "cats").iterdir())
    target = photo.resolve()
    photo.unlink()
    assert load_image_data(folder, 32).fingerprint != first
    photo.symlink_to(target)
    assert load_image_data(folder, 32).fingerprint == first


def cached_runner(
    data, tmp_path, weights_file, cache: FeatureCache | None = None, image_size: int = 32
):
    ctx = SpaceContext(image_size, 2, DEFAULT_BACKBONE.with_weights(str(weights_file)))
    store = RunStore(tmp_path / "run")
    store.create()
    cache = cache or FeatureCache(data, tmp_path / "cache")
    settings = TrainSettings(epochs=3, patience=3, batch_size=16)
    return TrialRunner(transfer.SPACE, ctx, data, store=store, settings=settings, features=cache)


def test_a_cached_trial_is_the_full_model_on_raw_images(tiny_data, tmp_path, weights_file):
    runner = cached_runner(tiny_data, tmp_path, weights_file)
    result, model = runner.run(TrialRequest(0, transfer_hp(dense_units=32, dropout=0.2)))
    assert result.status == "complete" and result.features == "computed"
    split = split_frozen_base(model)
    assert split.pool is not None  # the head trains on pooled features
    features, source = runner.features.features(split, runner.features.key(split))
    assert source == "memory"
    cached = split.head.predict(features["validation"], verbose=0)
    full = model.predict(tiny_data.validation.x, verbose=0)
    np.testing.assert_allclose(full, cached, rtol=1e-5, atol=1e-6)
    # The stored model, reloaded, is that same model, and its validation accuracy is the one
    # the trial recorded at its best epoch.
    stored = keras.saving.load_model(runner.store.run_dir / "best_model.keras", safe_mode=True)
    np.testing.assert_allclose(stored.predict(tiny_data.validation.x, verbose=0), full, atol=1e-6)
    _, accuracy = stored.evaluate(tiny_data.validation.x, tiny_data.validation.y, verbose=0)
    assert accuracy == pytest.approx(result.val_accuracy, abs=1e-6)
    # The next trial with the same base takes the features from memory; only its head trains.
    second, _ = runner.run(TrialRequest(1, transfer_hp(pooling="max")))
    assert second.features == "memory"
    assert set(runner.store.epochs()["phase"]) == {"train"}


def test_a_fine_tune_trial_reuses_the_first_stage_of_a_matching_trial(
    tiny_data, tmp_path, weights_file
):
    runner = cached_runner(tiny_data, tmp_path, weights_file)
    frozen, _ = runner.run(TrialRequest(0, transfer_hp(learning_rate=1e-3)))
    tuned, _ = runner.run(
        TrialRequest(1, transfer_hp(learning_rate=1e-3, mode="fine_tune", fine_tune_at=0.9))
    )
    other, _ = runner.run(
        TrialRequest(2, transfer_hp(learning_rate=2e-3, mode="fine_tune", fine_tune_at=0.9))
    )
    assert (frozen.head_from_trial, tuned.head_from_trial, other.head_from_trial) == (
        None,
        0,
        None,
    )
    epochs = runner.store.epochs()
    first = epochs[epochs["trial_id"] == 0].drop(columns="trial_id").reset_index(drop=True)
    reused = epochs[(epochs["trial_id"] == 1) & (epochs["phase"] == "train")]
    assert reused.drop(columns="trial_id").reset_index(drop=True).equals(first)
    assert "fine_tune" in set(epochs[epochs["trial_id"] == 1]["phase"])
    # A later process finds the head on disk.
    fresh = cached_runner(
        tiny_data, tmp_path / "later", weights_file, FeatureCache(tiny_data, tmp_path / "cache")
    )
    again, _ = fresh.run(
        TrialRequest(0, transfer_hp(learning_rate=1e-3, mode="fine_tune", fine_tune_at=0.95))
    )
    assert again.head_from_trial == 0 and again.features == "disk"


def search_config(folder, tmp_path, cache_dir, **overrides) -> SearchConfig:
    settings = {
        "space": "transfer",
        "data": str(folder),
        "max_trials": 1,
        "epochs": 1,
        "image_size": 32,
        "batch_size": 16,
        "name": "cached",
        "runs_dir": str(tmp_path / "runs"),
        "cache_dir": str(cache_dir),
        "fix": ("mode=frozen", *NO_AUGMENTATION_FIX),
    }
    return SearchConfig(**(settings | overrides))


def test_the_disk_cache_survives_a_resume_and_is_never_used_for_other_data(
    tiny_folder, tmp_path, weights_file
):
    cache = tmp_path / "cache"
    config = search_config(tiny_folder, tmp_path, cache, weights=str(weights_file))
    store = run_search(config)
    assert list(store.trials()["features"]) == ["computed"]
    assert len(list(cache.glob("features-*"))) == 1
    resumed = run_search(
        search_config(
            tiny_folder, tmp_path, cache, weights=str(weights_file), max_trials=2, resume=True
        )
    )
    assert list(resumed.trials()["features"]) == ["computed", "disk"]
    # Other images, the same cache folder: new features, the old ones left alone.
    other = link_images(tmp_path / "other", {"train": 24, "validation": 21})
    elsewhere = run_search(
        search_config(other, tmp_path, cache, weights=str(weights_file), name="other")
    )
    assert list(elsewhere.trials()["features"]) == ["computed"]
    assert len(list(cache.glob("features-*"))) == 2


def test_mixed_precision_computes_in_float16_with_a_float32_output(tiny_folder, tmp_path, tiny_run):
    _, default = tiny_run
    assert default.read_run_info()["precision"] == "float32"  # auto, on a machine without GPU
    config = SearchConfig(
        space="scratch",
        data=str(tiny_folder),
        max_trials=1,
        epochs=1,
        image_size=32,
        batch_size=16,
        runs_dir=str(tmp_path),
        name="mixed",
        mixed_precision="on",
        jit="off",
    )
    try:
        store = run_search(config)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert store.read_run_info()["precision"] == "mixed_float16"
    assert list(store.trials()["status"]) == ["complete"]
    model = keras.saving.load_model(store.best_model_path, safe_mode=True)
    assert model.get_layer("conv_1").compute_dtype == "float16"
    assert model.get_layer("prediction").compute_dtype == "float32"
    assert model.predict(np.zeros((1, 32, 32, 3)), verbose=0).dtype == np.float32


def test_a_data_set_larger_than_memory_streams_from_the_disk_cache(tiny_folder, tmp_path):
    from search.inputs import training_dataset

    data = load_image_data(tiny_folder, 32, cache_dir=tmp_path)
    assert isinstance(data.train.x, np.memmap)
    streamed = training_dataset(data.train.x, data.train.y, 16, seed=3, limit=0)
    held = training_dataset(np.array(data.train.x), data.train.y, 16, seed=3)
    epochs = [
        [(x.numpy(), y.numpy()) for x, y in dataset] for dataset in (streamed, streamed, held)
    ]
    for (xs, ys), (xh, yh) in zip(epochs[0], epochs[2], strict=True):
        np.testing.assert_array_equal(xs, xh)
        np.testing.assert_array_equal(ys, yh)
    assert sum(len(y) for _, y in epochs[0]) == len(data.train)
    # Every epoch a new order, every image once.
    first, second = (np.concatenate([y for _, y in e]) for e in epochs[:2])
    assert sorted(first) == sorted(second) == sorted(data.train.y)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(epochs[0], epochs[1], strict=True))


def test_a_fine_tune_that_never_beats_the_frozen_head_keeps_its_weights_in_the_stored_model(
    tiny_data, tmp_path, weights_file
):
    """A fine-tune phase far too fast for the base ends worse on validation loss than the frozen
    head did, so the trial falls back to the frozen phase's weights, and the stored model is
    the same model as a frozen trial of the same point and seed."""
    frozen_runner = cached_runner(tiny_data, tmp_path / "frozen", weights_file)
    _, frozen_model = frozen_runner.run(TrialRequest(0, transfer_hp(learning_rate=1e-3)))
    runner = cached_runner(tiny_data, tmp_path / "tuned", weights_file)
    tuned, _ = runner.run(
        TrialRequest(
            0,
            transfer_hp(
                learning_rate=1e-3, mode="fine_tune", fine_tune_at=0, fine_tune_learning_rate=0.05
            ),
        )
    )
    assert tuned.status == "complete"
    epochs = runner.store.epochs()
    first, second = (epochs[epochs["phase"] == phase] for phase in ("train", "fine_tune"))
    assert len(second), "no fine-tune epoch ran"
    assert second["val_loss"].min() > first["val_loss"].min(), "the fine-tune phase won"
    assert tuned.best_epoch in set(first["epoch"])
    stored = keras.saving.load_model(runner.store.best_model_path, safe_mode=True)
    for kept, frozen in zip(stored.get_weights(), frozen_model.get_weights(), strict=True):
        np.testing.assert_allclose(kept, frozen, atol=1e-6)


def test_pooled_features_are_kept_apart_where_the_poolings_differ(
    tiny_folder, tmp_path, weights_file
):
    """At 64 px MobileNetV2's output is 2x2, so average and max pooling differ (at 32 px it is
    1x1 and they agree): a max-pooled trial after an average-pooled one, on the same base
    features, still trains on max-pooled ones, and its head gives the full model's output."""
    data = load_image_data(tiny_folder, 64)
    runner = cached_runner(data, tmp_path, weights_file, image_size=64)
    _, average = runner.run(TrialRequest(0, transfer_hp(pooling="avg")))
    second, maximum = runner.run(TrialRequest(1, transfer_hp(pooling="max")))
    assert second.features == "memory", "the base features were not shared"
    pooled = {}
    for name, model in (("avg", average), ("max", maximum)):
        split = split_frozen_base(model)
        pooled[name], _ = runner.features.features(split, runner.features.key(split))
        cached = split.head.predict(pooled[name]["validation"], verbose=0)
        full = model.predict(data.validation.x, verbose=0)
        np.testing.assert_allclose(cached, full, rtol=1e-5, atol=1e-6, err_msg=name)
    assert not np.allclose(pooled["avg"]["validation"], pooled["max"]["validation"])
