"""The transfer space searches which pretrained network (issue 35): every registry backbone
builds and maps raw pixels as Keras's own preprocess_input does, a real CLI search runs three
backbones through both search back ends with the feature cache, fine-tuning and
--measure-deploy, and each bad value is one line before any run directory exists.

Only MobileNetV2 has pretrained weights here (../shared/data); the other backbones' weights
files are written by these tests from randomly initialised networks, so the loading path is
the real one but the accuracies mean nothing.
"""

from __future__ import annotations

import importlib
import json

import keras
import keras_tuner as kt
import numpy as np
import pytest
from conftest import error_lines, run_cli

from search.errors import UsageError
from search.runtime import get_runtime
from search.store import RunStore
from search.weights import backbone_names, named_weights, resolve_backbones
from spaces import BACKBONE, transfer
from spaces.backbones import BACKBONES
from spaces.context import SpaceContext

SEARCHED = ("mobilenet_v2", "mobilenet_v3_small", "efficientnet_v2_b0")
# Keras's module of each backbone, whose preprocess_input the exported model must match.
KERAS_MODULES = {
    "mobilenet_v2": "mobilenet_v2",
    "mobilenet_v3_small": "mobilenet_v3",
    "mobilenet_v3_large": "mobilenet_v3",
    "efficientnet_v2_b0": "efficientnet_v2",
    "resnet50_v2": "resnet_v2",
    "convnext_tiny": "convnext",
}
# One architecture per trial but the backbone: no augmentation, so frozen features are cached,
# and fine-tuning the last 10% of each base.
ONE_HEAD = (
    *("--fix", "flip=none", "--fix", "rotation=0", "--fix", "zoom=0", "--fix", "translation=0"),
    *("--fix", "contrast=0", "--fix", "pooling=avg", "--fix", "dense_units=0"),
    *("--fix", "dropout=0.2", "--fix", "learning_rate=0.001", "--fix", "mode=fine_tune"),
    *("--fix", "fine_tune_at=0.9", "--fix", "fine_tune_learning_rate=1e-05"),
)


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> dict[str, str]:
    """no_top weights files of MobileNetV3Small and EfficientNetV2B0, randomly initialised."""
    folder = tmp_path_factory.mktemp("weights")
    files = {}
    for name in SEARCHED[1:]:
        files[name] = str(folder / f"{name}.weights.h5")
        BACKBONES[name].build((32, 32, 3), None).save_weights(files[name])
    return files


def _pixels() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")


@pytest.mark.parametrize("name", list(BACKBONES))
def test_each_backbone_maps_raw_pixels_as_its_keras_preprocess_input(name):
    """The model takes [0, 255] pixels: what stands before the base plus what the base holds
    equals Keras's preprocess_input followed by the network (a pass-through for those that
    include their preprocessing), so an exported model needs no outside code."""
    entry = BACKBONES[name]
    ours = keras.ops.convert_to_numpy(entry.preprocess(keras.ops.convert_to_tensor(_pixels())))
    module = importlib.import_module(f"keras.applications.{KERAS_MODULES[name]}")
    np.testing.assert_allclose(ours, module.preprocess_input(_pixels()), rtol=1e-6, atol=1e-6)
    base = entry.build((32, 32, 3), None)
    assert base.name == BACKBONE and len(base.layers) > 100


def test_fine_tune_at_is_a_share_of_each_backbones_layers():
    for name in ("mobilenet_v2", "convnext_tiny"):
        hp = kt.HyperParameters()
        hp.Fixed("mode", "fine_tune")
        hp.Fixed("fine_tune_at", 0.5)
        model = transfer.build(hp, SpaceContext(32, 2, BACKBONES[name].choice(None)))
        assert transfer.fine_tune(hp, model)
        base = model.get_layer(BACKBONE)
        frozen = [layer.trainable for layer in base.layers].index(True)
        assert frozen == round(0.5 * len(base.layers)), name
    assert transfer.frozen_layers(100, 154) == 100  # a run stored before fractions


def test_a_backbones_model_converts_to_tflite_and_predicts_the_same(random_weights):
    """MobileNetV3Small keeps its preprocessing inside the base: the TFLite file, fed raw
    pixels, predicts what the Keras model does."""
    choice = BACKBONES["mobilenet_v3_small"].choice(random_weights["mobilenet_v3_small"])
    hp = kt.HyperParameters()
    hp.Fixed("flip", "none")
    hp.Fixed("rotation", 0.0)
    model = transfer.build(hp, SpaceContext(32, 2, choice))
    interpreter = get_runtime().tflite_interpreter(
        model_content=get_runtime().tflite_bytes(model), num_threads=1
    )
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    got = []
    for image in _pixels():
        interpreter.set_tensor(source["index"], image[None])
        interpreter.invoke()
        got.append(interpreter.get_tensor(target["index"])[0])
    np.testing.assert_allclose(got, model.predict(_pixels(), verbose=0), atol=1e-5)


@pytest.mark.bad_input
def test_bad_backbone_values_are_one_line_before_any_trial(random_weights):
    with pytest.raises(UsageError, match="unknown 'vgg16'; choose among mobilenet_v2, "):
        backbone_names(["mobilenet_v2", "vgg16"])
    with pytest.raises(UsageError, match=r"give NAME=PATH .* with NAME one of"):
        named_weights(["vgg16=/tmp/x.h5"])
    with pytest.raises(UsageError, match="efficientnet_v2_b0 is not among the backbones searched"):
        resolve_backbones(
            ["mobilenet_v2"], "imagenet", {"efficientnet_v2_b0": "random"}, image_size=32
        )
    assert backbone_names(["convnext_tiny", "mobilenet_v2"]) == ["mobilenet_v2", "convnext_tiny"]
    assert backbone_names(["all"]) == list(BACKBONES)
    untrained = resolve_backbones(["mobilenet_v2", "resnet50_v2"], "random", {}, image_size=32)
    assert [(c.name, c.weights) for c in untrained] == [
        ("mobilenet_v2", None),
        ("resnet50_v2", None),
    ]


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "case, expected",
    [
        ("unknown", "--backbones: unknown 'vgg16'"),
        ("offline", "EfficientNetV2B0 ImageNet weights are not in"),
        ("other architecture", "does not load into EfficientNetV2B0 (include_top=False)"),
    ],
)
def test_a_bad_backbone_on_the_command_line_is_one_line_exit_2(
    case, expected, random_weights, tiny_folder, tmp_path
):
    backbones = "mobilenet_v2,vgg16" if case == "unknown" else "efficientnet_v2_b0"
    argv = ["--space", "transfer", "--data", str(tiny_folder), "--image-size", "32"]
    argv += ["--runs-dir", str(tmp_path / "runs"), "--backbones", backbones]
    if case == "other architecture":
        argv += ["--weights", f"efficientnet_v2_b0={random_weights['mobilenet_v3_small']}"]
    result = run_cli(*argv, timeout=300)
    lines = [line for line in error_lines(result) if "UserWarning" not in line]
    assert result.returncode == 2, result.stderr[-2000:]
    assert expected in lines[-1] and "Traceback" not in result.stderr, lines
    if case == "offline":
        assert "--weights efficientnet_v2_b0=PATH" in lines[-1]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("backend", ["keras-tuner", "optuna"])
def test_every_backbone_searched_through_the_cli(
    backend, random_weights, weights_file, tiny_folder, tmp_path
):
    """Three backbones, one trial each, through the command line: every trial's first stage
    on cached features of its own backbone (never another's), then fine-tuned. The Optuna run
    (its trials enqueued, one per backbone) also measures each as a TFLite file, and its best
    model exports to TFLite and predicts as the Keras model does."""
    runs = tmp_path / "runs"
    if backend == "keras-tuner":
        choose = ("--algorithm", "grid")
    else:
        enqueue = tmp_path / "backbones.json"
        enqueue.write_text(json.dumps([{"backbone": name} for name in SEARCHED]))
        choose = ("--enqueue", str(enqueue), "--pruner", "none", "--measure-deploy")
    result = run_cli(
        *("--space", "transfer", "--data", str(tiny_folder), "--image-size", "32"),
        *("--runs-dir", str(runs), "--name", "three", "--backend", backend, *choose, *ONE_HEAD),
        *("--max-trials", "3", "--epochs", "1", "--batch-size", "16"),
        *("--backbones", ",".join(SEARCHED), "--weights", f"mobilenet_v2={weights_file}"),
        *[f"--weights={name}={random_weights[name]}" for name in SEARCHED[1:]],
        timeout=900,
    )
    assert result.returncode == 0, (result.stdout[-2000:], error_lines(result)[-20:])
    store = RunStore(runs / "three")
    trials = store.trials().set_index("trial_id")
    assert sorted(trials["hp_backbone"]) == sorted(SEARCHED)
    assert (trials["status"] == "complete").all()
    # Each backbone's features computed once, under its own key: none reused another's.
    assert (trials["features"] == "computed").all(), trials["features"]
    assert len(list((store.run_dir / "cache").glob("features-*"))) == 3
    phases = store.epochs().groupby("trial_id")["phase"].unique().map(tuple)
    assert (phases == ("train", "fine_tune")).all(), phases
    info = store.read_run_info()
    assert list(info["backbone_choices"]) == list(SEARCHED)
    assert (
        info["backbone_choices"]["mobilenet_v3_small"]["weights"]
        == random_weights["mobilenet_v3_small"]
    )
    if backend == "optuna":
        assert trials["latency_ms"].gt(0).all() and trials["tflite_kb"].nunique() == 3
        _check_tflite_export(store)


def _check_tflite_export(store: RunStore) -> None:
    exported = run_cli("export", str(store.run_dir), "--format", "tflite", timeout=300)
    assert exported.returncode == 0, error_lines(exported)[-10:]
    best = keras.saving.load_model(store.best_model_path)
    interpreter = get_runtime().tflite_interpreter(
        model_content=(store.run_dir / "export" / "model.tflite").read_bytes(), num_threads=1
    )
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.set_tensor(source["index"], _pixels()[:1])
    interpreter.invoke()
    np.testing.assert_allclose(
        interpreter.get_tensor(target["index"]), best.predict(_pixels()[:1], verbose=0), atol=1e-5
    )


def test_the_help_names_every_backbone():
    from search.cli import search_parser

    text = search_parser().format_help().replace("\n", " ")
    assert all(name in " ".join(text.split()) for name in BACKBONES)
