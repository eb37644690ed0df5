"""--weights is resolved through the backbone registry (spaces/backbones.py) before any trial:
a file is tried at each variant its entry lists, and what does not load is one line."""

from __future__ import annotations

import keras
import pytest

from search.errors import UsageError
from search.weights import backbone_weights
from spaces.backbones import BACKBONES
from spaces.context import DEFAULT_BACKBONE, BackboneWeights


def test_the_real_file_resolves_to_the_default_variant(weights_file):
    resolved = backbone_weights(str(weights_file), 32)
    assert resolved == DEFAULT_BACKBONE.with_weights(str(weights_file.resolve()))


def test_a_file_of_another_width_resolves_to_that_width(tmp_path):
    """The variant travels with the weights, so every build of the run uses the file's."""
    path = tmp_path / "narrow.weights.h5"
    BACKBONES["mobilenet_v2"].build((32, 32, 3), None, alpha=0.35).save_weights(path)
    resolved = backbone_weights(str(path), 32)
    assert resolved == BackboneWeights("mobilenet_v2", str(path), (("alpha", 0.35),))


def test_a_file_of_another_network_is_one_line_naming_the_variants_tried(tmp_path):
    path = tmp_path / "other.weights.h5"
    inputs = keras.Input((32, 32, 3))
    keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs)).save_weights(path)
    with pytest.raises(UsageError) as refused:
        backbone_weights(str(path), 32)
    message = str(refused.value)
    assert "\n" not in message and "does not load into MobileNetV2" in message
    assert "alpha=1.0, alpha=0.35, alpha=0.5, alpha=0.75, alpha=1.3, alpha=1.4" in message
    assert "MobileNetV2 no_top weights file (.h5)" in message


def test_a_missing_file_and_an_unknown_backbone_are_refused(tmp_path):
    with pytest.raises(UsageError, match="no such file; pass a MobileNetV2 no_top weights"):
        backbone_weights(str(tmp_path / "missing.h5"), 32)
    with pytest.raises(ValueError, match="unknown backbone 'vit'; choose one of mobilenet_v2"):
        backbone_weights(str(tmp_path / "missing.h5"), 32, "vit")
