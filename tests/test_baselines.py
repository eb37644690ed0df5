"""The documents' models as presets, the model card and predictions, on real photos at 32 px.

Every preset builds through its own space, trains, and has its document's layers; every preset
is a point of its space (Keras Tuner ranges, and Optuna runs an enqueued preset exactly); the
`baselines` space runs presets through the trial runner and both stages of the two-stage one.
"""

from __future__ import annotations

import json
import math
import re

import keras
import keras_tuner as kt
import numpy as np
import optuna
import pytest

from reports.model_card import write_model_card
from search.announce import TrialAnnouncer
from search.backends import keras_tuner as kt_backend
from search.backends.optuna import OptunaHyperParameters
from search.data import decode_image
from search.predict import describe, predict_files, predict_target
from search.stats import wilson_interval
from search.steps import SearchConfig, describe_run, run_search, score_best_on_test
from search.store import RunStore
from search.trial import TrainSettings, TrialRunner
from search.trial_edge import TrialRequest
from spaces import baselines, get_space, transfer
from spaces.context import DEFAULT_BACKBONE, SpaceContext

HP = kt.engine.hyperparameters
SPACES_WITH_PRESETS = sorted({p.space for p in baselines.PRESETS.values()})


@pytest.fixture(scope="module")
def ctx(weights_file) -> SpaceContext:
    return SpaceContext(32, 2, DEFAULT_BACKBONE.with_weights(str(weights_file)))


def trial_hp(name: str) -> kt.HyperParameters:
    """Hyperparameters as a back end hands them over with `baseline` chosen."""
    hp = kt.HyperParameters()
    hp.values["baseline"] = name
    return hp


# The documents' layers, in order, as `layer_summary` names them.
def conv(filters: int, padding: str, batch_norm: bool = False, dropout: float = 0.0) -> list[str]:
    """One Conv2D(3x3) + ReLU + MaxPooling2D(2) block, with a dropout before the pooling."""
    block = [f"Conv2D({filters}, 3, {padding})", *(["BatchNorm"] if batch_norm else []), "relu"]
    return block + ([f"Dropout({dropout})"] if dropout else []) + ["MaxPool(2)"]


RESCALE, MOBILENET = "Rescaling(1/255)", "Rescaling(1/127.5, -1)"
FLIP_ROTATE = ["RandomFlip(horizontal_and_vertical)", "RandomRotation(0.2)"]
FLIP_H_ROTATE = ["RandomFlip(horizontal)", "RandomRotation(0.2)"]
OUT = "Dense(1, sigmoid)"
SEED_002_CNN = [*conv(32, "valid", True), *conv(64, "valid", True), *conv(64, "valid", True)]
SEED_002_HEAD = ["Flatten", "Dense(128, relu)", "Dropout(0.5)", OUT]
SEED_003_CNN = [*conv(32, "valid"), *conv(32, "valid"), *conv(32, "valid", dropout=0.5)]
SEED_003_HEAD = ["Flatten", "Dense(128, relu)", OUT]
FROZEN = "MobileNetV2(frozen)"
TF_TRANSFER = [*FLIP_H_ROTATE, MOBILENET, FROZEN, "GlobalAvgPool", "Dropout(0.2)", OUT]

DOCUMENT_LAYERS = {
    "seed000_cnn": [
        RESCALE,
        *conv(16, "same"),
        *conv(32, "same"),
        *conv(64, "same"),
        "Flatten",
        "Dense(512, relu)",
        OUT,
    ],
    "seed000_cnn_dropout_augment": [
        "RandomFlip(horizontal)",
        "RandomRotation(0.125)",
        "RandomZoom(0.5)",
        "RandomTranslation(0.15, 0.15)",
        RESCALE,
        *conv(16, "same"),
        "Dropout(0.3)",
        *conv(32, "same"),
        *conv(64, "same"),
        "Dropout(0.3)",
        "Flatten",
        "Dense(512, relu)",
        "Dropout(0.1)",
        OUT,
    ],
    "seed001_model1": [
        *conv(16, "valid"),
        *conv(32, "valid", dropout=0.3),
        "Flatten",
        "Dense(64, relu)",
        OUT,
    ],
    "seed001_model2": [*FLIP_ROTATE, *conv(16, "valid"), "Flatten", "Dense(64, relu)", OUT],
    "seed001_model3": [
        *FLIP_ROTATE,
        MOBILENET,
        *conv(16, "valid"),
        *conv(32, "valid"),
        "Flatten",
        "Dense(64, relu)",
        OUT,
    ],
    "seed001_model4": [
        *FLIP_ROTATE,
        MOBILENET,
        FROZEN,
        "GlobalMaxPool",
        "Dropout(0.3)",
        "Dense(64, relu)",
        OUT,
    ],
    "seed002_model1": [*SEED_002_CNN, *SEED_002_HEAD],
    "seed002_model2": [*FLIP_ROTATE, *SEED_002_CNN, *SEED_002_HEAD],
    "seed002_model3": [*FLIP_ROTATE, MOBILENET, *SEED_002_CNN, *SEED_002_HEAD],
    "seed002_model4": [
        *FLIP_ROTATE,
        MOBILENET,
        FROZEN,
        "GlobalMaxPool",
        "Dense(32, relu)",
        "Dropout(0.5)",
        OUT,
    ],
    "seed003_model1": [RESCALE, *SEED_003_CNN, *SEED_003_HEAD],
    "seed003_model2": [*FLIP_H_ROTATE, RESCALE, *SEED_003_CNN, *SEED_003_HEAD],
    "seed003_model3": [*FLIP_H_ROTATE, MOBILENET, *SEED_003_CNN, *SEED_003_HEAD],
    "seed003_model4": [
        *FLIP_H_ROTATE,
        MOBILENET,
        FROZEN,
        "GlobalMaxPool",
        "Dropout(0.5)",
        "Dense(128, relu)",
        OUT,
    ],
    "tf_transfer_frozen": TF_TRANSFER,
    "tf_transfer_fine_tune": TF_TRANSFER,
}
# Adam's learning rate: Keras's default where the documents pass optimizer="adam".
LEARNING_RATES = {name: 1e-3 for name in DOCUMENT_LAYERS} | {
    "tf_transfer_frozen": 1e-4,
    "tf_transfer_fine_tune": 1e-4,
    "seed004_small_xception": 3e-4,
}


def _rescaling(layer) -> str:
    if math.isclose(layer.scale, 1 / 255) and layer.offset == 0:
        return RESCALE
    assert math.isclose(layer.scale, 1 / 127.5) and layer.offset == -1, "unexpected scaling"
    return MOBILENET


def describe_layer(layer) -> str | None:
    """A layer as the documents write it; None for layers that do nothing (input, dropout 0)."""
    kind = type(layer).__name__
    names = {
        "Conv2D": lambda: f"Conv2D({layer.filters}, {layer.kernel_size[0]}, {layer.padding})",
        "BatchNormalization": lambda: "BatchNorm",
        "Activation": lambda: layer.activation.__name__,
        "MaxPooling2D": lambda: f"MaxPool({layer.pool_size[0]})",
        "Dropout": lambda: f"Dropout({layer.rate})" if layer.rate else None,
        "Flatten": lambda: "Flatten",
        "GlobalAveragePooling2D": lambda: "GlobalAvgPool",
        "GlobalMaxPooling2D": lambda: "GlobalMaxPool",
        "Dense": lambda: f"Dense({layer.units}, {layer.activation.__name__})",
        "RandomFlip": lambda: f"RandomFlip({layer.mode})",
        "RandomRotation": lambda: f"RandomRotation({layer.factor[1]})",
        "RandomZoom": lambda: f"RandomZoom({layer.height_factor})",
        "RandomTranslation": lambda: (
            f"RandomTranslation({layer.height_factor}, {layer.width_factor})"
        ),
        "Rescaling": lambda: _rescaling(layer),
        "Functional": lambda: f"MobileNetV2({'trainable' if layer.trainable else 'frozen'})",
        "InputLayer": lambda: None,
    }
    return names[kind]()


def layer_summary(model: keras.Model) -> list[str]:
    return [d for d in map(describe_layer, model.layers) if d is not None]


def convolutions(model: keras.Model, kinds: tuple[str, ...]) -> list[tuple]:
    return [
        (type(layer).__name__, layer.filters, layer.strides)
        for layer in model.layers
        if type(layer).__name__ in kinds
    ]


def in_declared_range(declared, value) -> bool:
    """Whether a value lies in a Keras Tuner hyperparameter's declared range (and step)."""
    if isinstance(declared, HP.Fixed):
        return value == declared.value
    if isinstance(declared, HP.Boolean):
        return isinstance(value, bool)
    if isinstance(declared, HP.Choice):
        return value in declared.values
    if not declared.min_value <= value <= declared.max_value:
        return False
    if declared.sampling == "log" or not declared.step:
        return True
    steps = (value - declared.min_value) / declared.step
    return math.isclose(steps, round(steps), abs_tol=1e-6)


@pytest.mark.parametrize("name", list(baselines.PRESETS))
def test_every_preset_builds_through_its_space_and_trains(name, ctx, tiny_data):
    model = baselines.build_preset(name, ctx)
    history = model.fit(
        tiny_data.train.x,
        tiny_data.train.y,
        epochs=1,
        batch_size=16,
        validation_data=(tiny_data.validation.x, tiny_data.validation.y),
        verbose=0,
    )
    assert np.isfinite(history.history["loss"][0])
    assert model.output_shape == (None, 1)
    preset = baselines.PRESETS[name]
    assert preset.epochs > 0 and 0.5 < preset.reported_accuracy < 1


@pytest.mark.parametrize("name", list(DOCUMENT_LAYERS))
def test_preset_has_its_documents_layers(name, ctx):
    model = baselines.build_preset(name, ctx)
    assert layer_summary(model) == DOCUMENT_LAYERS[name]
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(LEARNING_RATES[name])


def test_small_xception_is_keras_ios(ctx):
    """Entry Conv2D(128, stride 2), blocks 256/512/728 of two separable convs, exit 1024,
    Dropout(0.25), Adam(3e-4), RandomFlip('horizontal') and RandomRotation(0.1)."""
    model = baselines.build_preset("seed004_small_xception", ctx)
    summary = convolutions(model, ("Conv2D", "SeparableConv2D"))
    assert summary[0] == ("Conv2D", 128, (2, 2))
    separable = [filters for kind, filters, _ in summary if kind == "SeparableConv2D"]
    assert separable == [256, 256, 512, 512, 728, 728, 1024]
    residuals = [filters for kind, filters, _ in summary[1:] if kind == "Conv2D"]
    assert residuals == [256, 512, 728]
    dropouts = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert dropouts == [0.25]
    augmentation = [describe_layer(layer) for layer in model.layers[1:3]]
    assert augmentation == ["RandomFlip(horizontal)", "RandomRotation(0.1)"]
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-4)


def test_tutorial_fine_tunes_from_layer_100_with_rmsprop(ctx):
    hp = trial_hp("tf_transfer_fine_tune")
    model = baselines.build(hp, ctx)
    base = model.get_layer(transfer.BACKBONE)
    assert not base.trainable
    assert baselines.fine_tune(hp, model)
    assert [layer.trainable for layer in base.layers[:100]] == [False] * 100
    norm = keras.layers.BatchNormalization  # frozen, so it stays in inference mode
    assert all(layer.trainable for layer in base.layers[100:] if not isinstance(layer, norm))
    assert not any(layer.trainable for layer in base.layers if isinstance(layer, norm))
    assert isinstance(model.optimizer, keras.optimizers.RMSprop)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-5)


@pytest.mark.parametrize("name", ["tf_transfer_frozen", "seed000_cnn"])
def test_one_stage_presets_do_not_fine_tune(name, ctx):
    hp = trial_hp(name)
    model = baselines.build(hp, ctx)
    assert not baselines.fine_tune(hp, model)


def test_baselines_space_records_the_preset_and_its_values(ctx):
    hp = trial_hp("seed003_model4")
    baselines.build(hp, ctx)
    assert hp.values == {"baseline": "seed003_model4"} | baselines.PRESETS["seed003_model4"].values


@pytest.mark.parametrize("space_name", SPACES_WITH_PRESETS)
def test_for_space_values_are_points_of_their_space(space_name, ctx):
    """Each preset names exactly the space's active hyperparameters, each within its range."""
    points = baselines.for_space(space_name)
    assert points
    for values in points:
        hp = kt.HyperParameters()
        hp.values.update(values)
        get_space(space_name).build(hp, ctx)
        active = {p.name: p for p in hp.space if hp.is_active(p)}
        assert set(active) == set(values)
        outside = [k for k, p in active.items() if not in_declared_range(p, values[k])]
        assert not outside, f"outside their declared ranges: {outside}"
        keras.backend.clear_session()


@pytest.mark.parametrize("space_name", [*SPACES_WITH_PRESETS, "baselines"])
def test_optuna_runs_enqueued_presets_exactly(space_name, ctx):
    """What --with-baselines enqueues is what the trials build, value for value."""
    space = baselines if space_name == "baselines" else get_space(space_name)
    points = baselines.for_space(space_name)
    study = optuna.create_study(direction="maximize")
    for values in points:
        study.enqueue_trial(values)
    for values in points:
        trial = study.ask()
        hp = OptunaHyperParameters(trial)
        space.build(hp, ctx)
        expected = values
        if space_name == "baselines":
            expected = values | baselines.PRESETS[values["baseline"]].values
        assert hp.values == expected
        study.tell(trial, 0.5)
        keras.backend.clear_session()


def test_for_space_has_only_that_spaces_presets():
    transfer_points = baselines.for_space("transfer")
    assert len(transfer_points) == 5
    assert all("fine_tune_at" not in p or p["mode"] == "fine_tune" for p in transfer_points)
    assert baselines.for_space("baselines") == [{"baseline": n} for n in baselines.PRESETS]
    assert baselines.for_space("nothing") == []


def test_two_stage_preset_trains_both_stages_as_a_trial(ctx, tiny_data, tmp_path):
    store = RunStore(tmp_path / "run")
    store.create()
    runner = TrialRunner(
        baselines.SPACE,
        ctx,
        tiny_data,
        store=store,
        settings=TrainSettings(epochs=1, batch_size=16),
    )
    result, _ = runner.run(TrialRequest(0, trial_hp("tf_transfer_fine_tune")))
    assert result.status == "complete", result.error
    assert list(store.epochs()["phase"]) == ["train", "fine_tune"]
    row = store.trials().iloc[0]
    assert (row["hp_baseline"], row["hp_mode"], row["hp_fine_tune_at"]) == (
        "tf_transfer_fine_tune",
        "fine_tune",
        0.65,
    )


@pytest.fixture(scope="module")
def baselines_run(ctx, tiny_data, tmp_path_factory) -> RunStore:
    """A two-trial Keras Tuner search of the baselines space, stored and scored as a run."""
    config = SearchConfig(space="baselines", max_trials=2, epochs=1, image_size=32, name="b")
    store = RunStore(tmp_path_factory.mktemp("runs") / "b")
    store.create()
    store.write_run_info(
        describe_run(
            config,
            data=tiny_data,
            ctx=ctx,
            devices=[],
            precision="float32",
        )
        | {"status": "finished"}
    )
    settings = TrainSettings(epochs=1, batch_size=16)
    announcer = TrialAnnouncer(store, max_trials=2)
    runner = TrialRunner(
        baselines.SPACE, ctx, tiny_data, store=store, settings=settings, announcer=announcer
    )
    kt_backend.run_tuner(
        runner, algorithm="random", max_trials=2, seed=7, max_consecutive_failures=3
    )
    score_best_on_test(store, lambda size: tiny_data)
    return store


def test_keras_tuner_trials_carry_only_their_own_presets_values(baselines_run):
    trials = baselines_run.trials()
    assert list(trials["status"]) == ["complete", "complete"]
    assert trials["hp_baseline"].nunique() == 2
    every_key = {k for p in baselines.PRESETS.values() for k in p.values}
    for _, row in trials.iterrows():
        values = baselines.PRESETS[row["hp_baseline"]].values
        for key in every_key:
            stored = row.get(f"hp_{key}")
            if key not in values:
                assert stored is None or math.isnan(stored), f"{key} from another preset"
            elif isinstance(values[key], float):
                assert stored == pytest.approx(values[key]), key
            else:
                assert stored == values[key], key


def card_table(card: str) -> dict[str, str]:
    """The card's two-column table rows, by their first cell."""
    rows = re.findall(r"^\| (.+?) \| (.+?) \|$", card, flags=re.MULTILINE)
    return dict(rows)


# "x% (95% CI a-b, n = N)": an accuracy with the Wilson interval of the split's N images.
CI = r"([\d.]+)% \(95% CI ([\d.]+)\u2013([\d.]+), n = (\d+)\)"


def test_model_card_reports_the_store(tiny_run, tmp_path):
    _, store = tiny_run
    path = write_model_card(store.run_dir, tmp_path)
    card = path.read_text(encoding="utf-8")
    assert path.name == "MODEL_CARD.md"
    best = store.trials().set_index("trial_id").loc[store.read_best_hparams()["trial_id"]]
    table = card_table(card)
    info = store.read_run_info()
    for measure, column, split in [
        ("validation accuracy", "val_accuracy", "validation"),
        ("test accuracy", "test_accuracy", "test"),
    ]:
        found = re.fullmatch(CI, table[measure])
        assert found, table[measure]
        n = sum(info["counts"][split].values())
        assert int(found[4]) == n
        assert float(found[1]) == pytest.approx(100 * best[column], abs=5e-3)
        low, high = wilson_interval(round(best[column] * n), n)
        assert (float(found[2]), float(found[3])) == pytest.approx(
            (100 * low, 100 * high), abs=0.05
        )
    assert f"Test accuracy: {table['test accuracy']}." in card
    # Clean first: the verdict judges it; the fit-time figures beside it for comparison.
    for measure, column in [
        ("training accuracy, clean", "train_accuracy_clean"),
        ("training accuracy, fit-time", "train_accuracy_fit"),
        ("gap, clean (training - validation accuracy)", "gap_clean"),
        ("gap, fit-time (training - validation accuracy)", "gap_fit"),
    ]:
        # Four places, rounded half to even: 0.03125 is written 0.0312.
        assert float(table[measure]) == pytest.approx(best[column], abs=5.1e-5), measure
    assert list(table).index("gap, clean (training - validation accuracy)") < list(table).index(
        "gap, fit-time (training - validation accuracy)"
    )
    assert re.fullmatch(r"(overfit|underfit|fit) \(judged on the clean gap; .*\)", table["verdict"])
    assert "The verdict judges the clean gap" in card
    assert "## Confirmation" not in card and "refit" not in card
    for name, value in store.read_best_hparams()["hyperparameters"].items():
        assert table[f"`{name}`"] == f"`{value}`"
    assert re.search(r"^\| `cats` \| 24 \| 16 \| 4 \|$", card, flags=re.MULTILINE)
    assert f"split seed {info['split_seed']}" in card
    assert "Skipped (unreadable) files: 0." in card
    assert "no baseline trials" in card


def hand_made_store(run_dir, clean: bool, **info) -> RunStore:
    """A finished two-trial run written through RunStore, without training: trial 0 (val 0.80)
    is the best; with `clean`, both have clean figures, else they are stored as older runs
    were (train_accuracy and gap, read as the fit-time ones)."""
    store = RunStore(run_dir)
    store.create()
    counts = {"train": {"cats": 40, "dogs": 40}, "validation": {"cats": 80, "dogs": 80}}
    store.write_run_info(
        {
            "name": "hand-made",
            "space": "scratch",
            "backend": "keras-tuner",
            "algorithm": "random",
            "image_size": 32,
            "class_names": ["cats", "dogs"],
            "counts": counts | {"test": {"cats": 100, "dogs": 100}},
            "data": "/data/pets",
            "layout": "train/validation",
            "split_seed": 1337,
            "status": "finished",
        }
        | info
    )
    for trial_id, (fit, val, clean_acc) in enumerate([(0.78, 0.80, 0.90), (0.70, 0.72, 0.74)]):
        store.begin_trial(trial_id, {"filters": 16 * (trial_id + 1)})
        for epoch in (1, 2):
            store.append_epoch(
                {
                    "trial_id": trial_id,
                    "epoch": epoch,
                    "loss": 0.6 / epoch,
                    "accuracy": fit - 0.1 * (2 - epoch),
                    "val_loss": 0.6 / epoch,
                    "val_accuracy": val - 0.1 * (2 - epoch),
                    "train_loss_clean": 0.5 / epoch if clean else None,
                    "train_accuracy_clean": clean_acc - 0.1 * (2 - epoch) if clean else None,
                    "phase": "train",
                }
            )
        results = {"status": "complete", "best_epoch": 2, "val_accuracy": val, "val_loss": 0.3}
        if clean:
            results |= {"train_accuracy_fit": fit, "gap_fit": fit - val}
            results |= {"train_accuracy_clean": clean_acc, "gap_clean": clean_acc - val}
        else:
            results |= {"train_accuracy": fit, "gap": fit - val}
        store.finish_trial(trial_id, results | {"n_params": 1000, "duration_s": 3.0})
    store.set_test_accuracy(0, 0.985)
    text = json.dumps({"trial_id": 0, "hyperparameters": {"filters": 16}})
    store.best_hparams_path.write_text(text, encoding="utf-8")
    return store


def test_model_card_reports_the_refit_and_the_confirmation(tmp_path):
    low, high = wilson_interval(199, 200)
    refit = {
        "trial_id": 0,
        "first_epochs": 5,
        "fine_tune_epochs": 3,
        "train_images": 240,
        "test_accuracy": 0.995,
        "test_accuracy_low": low,
        "test_accuracy_high": high,
    }
    confirm = {"top": 2, "seeds": 3, "winner": 0, "exported_run": 2, "exported_seed": 200048}
    store = hand_made_store(tmp_path / "run", clean=True, refit=refit, confirm=confirm)
    for trial_id, mean, sd in [(0, 0.79, 0.012), (1, 0.71, 0.02)]:
        confirmed = {"confirm_mean": mean, "confirm_sd": sd, "confirm_val_loss": 0.3}
        store.finish_trial(trial_id, confirmed | {"confirm_runs": 4})
    card = write_model_card(store.run_dir, tmp_path).read_text(encoding="utf-8")
    table = card_table(card)
    best, refitted = (
        re.fullmatch(CI, table["test accuracy"]),
        re.fullmatch(CI, table["test accuracy, refit model"]),
    )
    assert best.groups()[::3] == ("98.50", "200")
    assert refitted.groups() == ("99.50", f"{100 * low:.1f}", f"{100 * high:.1f}", "200")
    assert (
        f"Refit model, `refit_model.keras`: test accuracy {table['test accuracy, refit model']}; "
        "trial 0's configuration trained again with its seed on the training and validation "
        "images together (240 images) for 5 epochs, then 3 fine-tuning," in card
    )
    confirmation = card[card.index("## Confirmation") : card.index("## Baselines")]
    assert "The ranking followed the mean validation accuracy of each finalist's runs" in card
    assert "`--confirm-top 2 --confirm-seeds 3`" in confirmation
    assert "Trial 0 won; the exported model is its run 2 (confirmation run 2, seed 200048)." in (
        confirmation
    )
    assert "the test accuracy is the exported model's" in confirmation
    finalists = re.findall(r"^\| (\d) \| (\d) \| (.+?) \| (.+?) \|$", confirmation, re.M)
    assert finalists == [
        ("0", "4", "0.7900 \u00b1 0.0120", "0.8000"),
        ("1", "4", "0.7100 \u00b1 0.0200", "0.7200"),
    ]
    assert "(a confirmed finalist's mean over its runs)" in card
    assert table["verdict"].startswith("overfit (judged on the clean gap")  # +0.10 clean


def test_model_card_of_an_older_run_says_its_verdict_judged_the_fit_time_gap(tmp_path):
    store = hand_made_store(tmp_path / "run", clean=False)
    card = write_model_card(store.run_dir, tmp_path).read_text(encoding="utf-8")
    table = card_table(card)
    assert table["training accuracy, clean"] == "n/a"
    assert table["gap, clean (training - validation accuracy)"] == "n/a"
    assert table["gap, fit-time (training - validation accuracy)"] == "-0.0200"
    assert table["verdict"].startswith("underfit (judged on the fit-time gap")
    assert "This trial has no clean figures" in card
    assert "## Confirmation" not in card and "refit" not in card
    assert re.fullmatch(CI, table["test accuracy"])


def test_model_card_names_the_baselines_the_best_trial_beat(baselines_run, tmp_path):
    card = write_model_card(baselines_run.run_dir, tmp_path).read_text(encoding="utf-8")
    trials = baselines_run.trials()
    best_id = baselines_run.read_best_hparams()["trial_id"]
    other = trials[trials["trial_id"] != best_id].iloc[0]
    best = trials[trials["trial_id"] == best_id].iloc[0]
    verdict = "beaten" if other["val_accuracy"] < best["val_accuracy"] else "tied"
    assert re.search(
        rf"^\| `{best['hp_baseline']}` \| {best_id} \| .*is the best trial", card, re.M
    )
    assert re.search(rf"^\| `{other['hp_baseline']}` \| .* \| {verdict}", card, re.M)
    beaten = int(verdict == "beaten")
    assert f"The best trial beat {beaten} of the run's 2 baseline trials" in card


@pytest.fixture(scope="module")
def enqueued_run(tiny_folder, tmp_path_factory) -> RunStore:
    """A real Optuna run of the scratch space that starts from its presets, as the bench's do."""
    runs = tmp_path_factory.mktemp("runs")
    presets = runs / "presets.json"
    presets.write_text(json.dumps(baselines.for_space("scratch")), encoding="utf-8")
    config = SearchConfig(
        space="scratch",
        data=str(tiny_folder),
        backend="optuna",
        pruner="none",
        max_trials=3,
        epochs=1,
        image_size=32,
        batch_size=16,
        name="enqueued",
        runs_dir=str(runs),
        enqueue=str(presets),
    )
    return run_search(config)


def test_model_card_finds_enqueued_presets_by_their_values(enqueued_run, tmp_path):
    card = write_model_card(enqueued_run.run_dir, tmp_path).read_text(encoding="utf-8")
    assert re.search(r"^\| `seed000_cnn` \| 0 \| complete \|", card, re.M)
    assert re.search(r"^\| `seed003_model1` \| 1 \| complete \|", card, re.M)
    assert "of the run's 2 baseline trials" in card
    assert not re.search(r"^\| `\w+` \| 2 \|", card, re.M), "the searched trial is no baseline"


def test_predictions_match_the_model_and_read_as_seed_004(tiny_run, tiny_folder):
    _, store = tiny_run
    images = sorted((tiny_folder / "validation" / "dogs").iterdir())[:3]
    predictions = predict_target(store.run_dir, images)
    model = keras.saving.load_model(store.best_model_path)
    expected = model.predict(np.stack([decode_image(p, 32) for p in images]), verbose=0)[:, 0]
    for prediction, dog in zip(predictions, expected, strict=True):
        probabilities = prediction["probabilities"]
        assert sum(probabilities.values()) == pytest.approx(1.0)
        assert probabilities["dogs"] == pytest.approx(float(dog), abs=1e-6)
        assert prediction["class"] == ("dogs" if dog > 0.5 else "cats")
        dog = float(dog)
        sentence = f"This image is {1 - dog:.2%} cats and {dog:.2%} dogs."
        assert describe(prediction) == sentence
        assert re.fullmatch(r"This image is \d+\.\d\d% cats and \d+\.\d\d% dogs\.", sentence)


def test_prediction_from_the_model_file_skips_unreadable_images(tiny_run, tiny_folder, tmp_path):
    _, store = tiny_run
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"")
    photo = next((tiny_folder / "validation" / "cats").iterdir())
    first, second = predict_target(store.best_model_path, [broken, photo])
    assert first["path"] == str(broken) and "error" in first
    assert describe(first).startswith("cannot read this image")
    assert set(second["probabilities"]) == {"cats", "dogs"}


def test_three_classes_are_described_most_likely_first(tiny_data, tmp_path):
    model = get_space("scratch").build(kt.HyperParameters(), SpaceContext(32, 3))
    labels = np.arange(len(tiny_data.train)) % 3
    model.fit(tiny_data.train.x, labels, epochs=1, batch_size=16, verbose=0)
    model.save(tmp_path / "three.keras")
    files = tiny_data.test.files[:2]
    predictions = predict_files(tmp_path / "three.keras", files, ["a", "b", "c"], image_size=32)
    for prediction in predictions:
        shares = sorted(prediction["probabilities"].values(), reverse=True)
        assert sum(shares) == pytest.approx(1.0)
        sentence = describe(prediction)
        percents = [float(p) / 100 for p in re.findall(r"(\d+\.\d\d)%", sentence)]
        assert percents == pytest.approx(shares, abs=5e-5)
        share = r"\d+\.\d\d% [abc]"
        assert re.fullmatch(rf"This image is {share}, {share} and {share}\.", sentence)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_every_depth_and_kernel_builds_at_32_px(padding):
    """'valid' padding (seeds 001-003) never leaves a block without pixels at the smallest size."""
    space = get_space("preprocess")
    for blocks in range(1, 5):
        for kernel in (3, 5):
            hp = kt.HyperParameters()
            hp.values.update({"conv_blocks": blocks, "kernel_size": kernel, "padding": padding})
            model = space.build(hp, SpaceContext(32, 2))
            assert model.output_shape == (None, 1)
            keras.backend.clear_session()
