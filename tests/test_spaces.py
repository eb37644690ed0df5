"""Every space builds, trains one epoch on real photos and predicts, from any point of its space."""

from __future__ import annotations

import keras
import keras_tuner as kt
import numpy as np
import pytest

from spaces import BACKBONE, SPACES, get_space, transfer
from spaces.backbones import BACKBONES, build_backbone, get_backbone
from spaces.context import DEFAULT_BACKBONE, BackboneWeights, SpaceContext


def context(space_name: str, weights_file, num_classes: int = 2) -> SpaceContext:
    if space_name in ("transfer", "baselines"):  # both load MobileNetV2 backbones
        return SpaceContext(32, num_classes, DEFAULT_BACKBONE.with_weights(str(weights_file)))
    return SpaceContext(32, num_classes)


@pytest.mark.parametrize("name", list(SPACES))
def test_space_trains_one_epoch_and_predicts(name, tiny_data, weights_file):
    ctx = context(name, weights_file)
    hp = kt.HyperParameters()
    model = get_space(name).build(hp, ctx)
    history = model.fit(
        tiny_data.train.x,
        tiny_data.train.y,
        epochs=1,
        batch_size=16,
        validation_data=(tiny_data.validation.x, tiny_data.validation.y),
        verbose=0,
    )
    assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert np.isfinite(history.history["loss"][0])
    predictions = model.predict(tiny_data.test.x, verbose=0)
    assert predictions.shape == (len(tiny_data.test), 1)
    assert ((predictions >= 0) & (predictions <= 1)).all()
    assert hp.values, "the space registered no hyperparameter"


@pytest.mark.parametrize("name", list(SPACES))
def test_space_builds_at_random_points(name, weights_file):
    """Values drawn from the declared ranges always build (conditional ones included)."""
    space, ctx = get_space(name), context(name, weights_file)
    declared = kt.HyperParameters()
    space.build(declared, ctx)
    for seed in range(3):
        hp = kt.HyperParameters()
        drawn = {p.name: p.random_sample(seed) for p in declared.space}
        hp.values.update(drawn)
        model = space.build(hp, ctx)
        assert {k: hp.values[k] for k in drawn} == drawn, "build ignored the drawn values"
        assert model.output_shape == (None, 1)
        keras.backend.clear_session()


def test_multiclass_head_is_softmax(tiny_data):
    ctx = SpaceContext(32, 3)
    model = get_space("scratch").build(kt.HyperParameters(), ctx)
    labels = np.arange(len(tiny_data.train)) % 3
    model.fit(tiny_data.train.x, labels, epochs=1, batch_size=16, verbose=0)
    probabilities = model.predict(tiny_data.test.x, verbose=0)
    assert probabilities.shape == (len(tiny_data.test), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_scratch_defaults_are_the_documents_cnn():
    """Seed 000's model: 16/32/64 filters, kernel 3, flatten, Dense 512, rescaling 1/255."""
    hp = kt.HyperParameters()
    model = get_space("scratch").build(hp, SpaceContext(160, 2))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [16, 32, 64]
    assert {c.kernel_size for c in convs} == {(3, 3)}
    assert model.get_layer("dense").units == 512
    assert model.get_layer("rescale").scale == pytest.approx(1 / 255)


def test_transfer_base_is_frozen_in_inference_mode_and_fine_tunes(weights_file):
    ctx = SpaceContext(32, 2, DEFAULT_BACKBONE.with_weights(str(weights_file)))
    hp = kt.HyperParameters()
    hp.Fixed("mode", "fine_tune")
    model = transfer.build(hp, ctx)
    base = model.get_layer(transfer.BACKBONE)
    assert not base.trainable
    assert hp.get("fine_tune_at") == 0.65  # the tutorial's layer 100 of 154
    assert transfer.fine_tune(hp, model)
    assert [layer.trainable for layer in base.layers[:100]] == [False] * 100
    norm = keras.layers.BatchNormalization
    assert all(layer.trainable for layer in base.layers[100:] if not isinstance(layer, norm))
    assert not any(layer.trainable for layer in base.layers if isinstance(layer, norm))
    assert isinstance(model.optimizer, keras.optimizers.RMSprop)


def test_fine_tuning_keeps_the_base_batch_norm_statistics(weights_file, tiny_data):
    """Batch norm stays in inference mode while fine-tuning, as the TF tutorial requires: a
    fine-tune epoch from layer 0 updates the convolutions but not one batch-norm moving mean or
    variance. (Keras 3's fit overrides the base's training=False: keras-team/keras#20285.)"""
    ctx = SpaceContext(32, 2, DEFAULT_BACKBONE.with_weights(str(weights_file)))
    hp = kt.HyperParameters()
    hp.Fixed("mode", "fine_tune")
    hp.Fixed("fine_tune_at", 0)
    hp.Fixed("fine_tune_learning_rate", 1e-4)
    model = transfer.build(hp, ctx)
    assert transfer.fine_tune(hp, model)
    base = model.get_layer(transfer.BACKBONE)
    norms = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    convs = [layer for layer in base.layers if isinstance(layer, keras.layers.Conv2D)]
    statistics = [(n.moving_mean.numpy(), n.moving_variance.numpy()) for n in norms]
    kernels = [c.kernel.numpy() for c in convs]
    model.fit(tiny_data.train.x, tiny_data.train.y, epochs=1, batch_size=16, verbose=0)
    for norm, (mean, variance) in zip(norms, statistics, strict=True):
        np.testing.assert_array_equal(norm.moving_mean.numpy(), mean, err_msg=norm.name)
        np.testing.assert_array_equal(norm.moving_variance.numpy(), variance, err_msg=norm.name)
    assert not any(norm.trainable for norm in norms), "batch norm's scale and shift trained"
    assert any(not np.array_equal(c.kernel.numpy(), k) for c, k in zip(convs, kernels, strict=True))


def test_transfer_uses_the_pretrained_weights(weights_file):
    """The backbone's weights are the file's, not a random init."""
    choice = DEFAULT_BACKBONE.with_weights(str(weights_file))
    first = build_backbone(choice, (32, 32, 3)).get_layer("Conv1").get_weights()[0]
    second = build_backbone(choice, (32, 32, 3)).get_layer("Conv1").get_weights()[0]
    np.testing.assert_array_equal(first, second)
    random = build_backbone(choice.with_weights(None), (32, 32, 3))
    assert not np.allclose(first, random.get_layer("Conv1").get_weights()[0])
    # The model the transfer space builds holds the same base, with the same values.
    model = transfer.build(kt.HyperParameters(), SpaceContext(32, 2, choice))
    np.testing.assert_array_equal(
        model.get_layer(BACKBONE).get_layer("Conv1").get_weights()[0], first
    )


def test_the_default_backbone_is_a_registry_entry_at_one_of_its_variants():
    """Every entry builds under the BACKBONE contract, its first variant the default."""
    entry = get_backbone(DEFAULT_BACKBONE.name)
    assert entry.choice("imagenet") == DEFAULT_BACKBONE
    assert DEFAULT_BACKBONE.options == {"alpha": 1.0}
    for name, entry in BACKBONES.items():
        assert entry.name == name and entry.variants
        base = build_backbone(entry.choice(None), (32, 32, 3))
        assert base.name == BACKBONE and len(base.output.shape) == 4  # no top, features out
    with pytest.raises(ValueError, match="unknown backbone 'resnet'; choose one of mobilenet_v2"):
        get_backbone("resnet")


def test_transfer_builds_the_variant_and_preprocessing_its_backbone_names():
    narrow = BackboneWeights("mobilenet_v2", None, (("alpha", 0.35),))
    model = transfer.build(kt.HyperParameters(), SpaceContext(32, 2, narrow))
    base = model.get_layer(BACKBONE)
    assert base.count_params() == build_backbone(narrow, (32, 32, 3)).count_params()
    assert (
        base.count_params()
        < build_backbone(DEFAULT_BACKBONE.with_weights(None), (32, 32, 3)).count_params()
    )
    rescale = model.get_layer("mobilenet_v2_preprocess")
    assert (rescale.scale, rescale.offset) == (1.0 / 127.5, -1.0)  # [0, 255] to [-1, 1]
