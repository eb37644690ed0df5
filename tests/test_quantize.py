"""`export --quantize` and `export --trial`, through the command line on the tiny scratch run:
quantized TFLite files that really are quantized, smaller, measured on the test split exactly as
the card and quantized.json say, and read by `predict`; any kept trial exported with its own
card and image size; what cannot be done refused in one line."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import error_lines, run_cli

from search.cli import export_parser
from search.data import decode_image
from search.export import LABELS_NAME, QUANTIZE, QUANTIZED_NAME
from search.stats import accuracy_interval, predicted_classes
from search.store import RunStore

# "x% (95% CI a-b, n = N)", as the card writes an accuracy with its Wilson interval.
CI = r"([\d.]+)% \(95% CI ([\d.]+)\u2013([\d.]+), n = (\d+)\)"
SENTENCE = re.compile(r"(.+): This image is (\d+\.\d\d)% cats and (\d+\.\d\d)% dogs\.")
# The ops an int8 model keeps in float: the float32 input's and output's conversions.
BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}
# The interpreter the tests read files with directly; search.predict silences its notice too.
pytestmark = pytest.mark.filterwarnings(r"ignore:\s*Warning. tf.lite.Interpreter is deprecated")


@pytest.fixture(scope="module")
def quantized(tiny_run, tmp_path_factory) -> dict[str, Path]:
    """The tiny run's best model exported through the CLI to TFLite, float32 and in each
    quantization, each into a folder of its own."""
    store = tiny_run[1]
    paths = {}
    for mode in (None, "dynamic", "float16", "int8"):
        output = tmp_path_factory.mktemp(mode or "float32") / "model.tflite"
        argv = ["export", str(store.run_dir), "--format", "tflite", "--output", str(output)]
        result = run_cli(*argv, *(["--quantize", mode] if mode else []))
        assert result.returncode == 0, error_lines(result)
        assert error_lines(result) == [], "the converter's logging stays off the terminal"
        assert result.stdout.strip() == str(output)
        paths[mode or "float32"] = output
    return paths


def interpreter(path: Path) -> tf.lite.Interpreter:
    """The file's own ops: XNNPACK, the default delegate, would stand in for most of them."""
    resolver = tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    loaded = tf.lite.Interpreter(model_path=str(path), experimental_op_resolver_type=resolver)
    loaded.allocate_tensors()
    return loaded


def tflite_outputs(path: Path, images: np.ndarray) -> np.ndarray:
    """The model's outputs for `images`, one at a time, straight from the interpreter."""
    model = interpreter(path)
    (source,), (result,) = model.get_input_details(), model.get_output_details()
    outputs = []
    for image in images:
        model.set_tensor(source["index"], image[None])
        model.invoke()
        outputs.append(model.get_tensor(result["index"])[0])
    return np.array(outputs)


def test_the_int8_export_runs_int8_ops_and_predict_reads_it(quantized, tiny_run, tiny_data):
    model = interpreter(quantized["int8"])
    (source,), (result,) = model.get_input_details(), model.get_output_details()
    # Input and output stay float32 raw pixels and probabilities, like every other export.
    assert source["dtype"] == np.float32 and result["dtype"] == np.float32
    tensors = {t["index"]: t for t in model.get_tensor_details()}
    ops = model._get_ops_details()  # TFLite's only listing of a model's ops
    assert {op["op_name"] for op in ops} >= {"CONV_2D", "FULLY_CONNECTED", *BOUNDARY_OPS}
    for op in ops:
        if op["op_name"] in BOUNDARY_OPS:
            continue
        for index in (*op["inputs"], *op["outputs"]):
            if index >= 0:  # -1: an optional input left out
                # int32: the biases, quantized at the scale of input times weights
                assert tensors[index]["dtype"] in (np.int8, np.int32), (op, tensors[index])
    used = {i for op in ops for i in (*op["inputs"], *op["outputs"]) if i >= 0}
    # Per tensor or per channel; the interpreter's unnamed scratch tensors have none.
    scales = [tensors[i]["quantization_parameters"]["scales"] for i in used]
    scales = [s for i, s in zip(used, scales, strict=True) if tensors[i]["dtype"] == np.int8]
    assert scales and all(len(s) and (s > 0).all() for s in scales), "int8 with its scales"

    images = tiny_data.test.files[:4]
    cli = run_cli("predict", str(quantized["int8"]), *images)
    assert cli.returncode == 0, error_lines(cli)
    assert error_lines(cli) == []
    got = [SENTENCE.fullmatch(line).groups() for line in cli.stdout.splitlines()]
    assert [path for path, *_ in got] == images
    dogs = tflite_outputs(quantized["int8"], tiny_data.test.x[:4].astype(np.float32))[:, 0]
    for (_, cats, dog), expected in zip(got, dogs, strict=True):
        assert float(dog) == pytest.approx(100 * expected, abs=0.006)
        assert float(cats) + float(dog) == pytest.approx(100, abs=0.011)


def test_every_quantization_is_smaller_than_float32(quantized):
    sizes = {mode: path.stat().st_size for mode, path in quantized.items()}
    for mode in QUANTIZE:
        assert sizes[mode] < sizes["float32"], sizes
    # What each quantization stores its weights in.
    kinds = {
        mode: {t["dtype"] for t in interpreter(path).get_tensor_details()}
        for mode, path in quantized.items()
    }
    assert np.int8 in kinds["dynamic"] and np.float16 in kinds["float16"], kinds
    assert np.int8 not in kinds["float32"] and np.float16 not in kinds["float32"], kinds


@pytest.mark.parametrize("mode", QUANTIZE)
def test_the_card_gives_the_accuracies_recomputed_from_both_models(mode, quantized, tiny_run):
    """The card's and quantized.json's test accuracies and intervals are what the float32 and
    the exported quantized file predict on the run's stored test split."""
    store = tiny_run[1]
    folder = quantized[mode].parent
    card = (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    figures = json.loads((folder / QUANTIZED_NAME).read_text(encoding="utf-8"))
    files, labels = store.split_images("test")
    images = np.stack([decode_image(Path(f), 32) for f in files]).astype(np.float32)
    assert figures["quantize"] == mode and figures["test_images"] == len(files)
    assert figures["trial_id"] == store.read_best_hparams()["trial_id"]
    for name, path in (("float32", quantized["float32"]), (mode, quantized[mode])):
        correct = int(np.sum(predicted_classes(tflite_outputs(path, images)[:, 0]) == labels))
        accuracy = correct / len(files)
        low, high = accuracy_interval(accuracy, len(files))
        measured = figures["models"][name]
        assert (measured["test_correct"], measured["test_accuracy"]) == (correct, accuracy)
        assert (measured["test_accuracy_low"], measured["test_accuracy_high"]) == (low, high)
        label = f"{name} (exported)" if name == mode else name
        row = re.search(rf"^\| {re.escape(label)} \| ([\d.,]+) KB \| {CI} \| (.+) \|$", card, re.M)
        assert row, card
        assert float(row[1].replace(",", "")) == pytest.approx(path.stat().st_size / 1024, abs=0.06)
        assert float(row[2]) == pytest.approx(100 * accuracy, abs=0.005)
        assert (float(row[3]), float(row[4])) == pytest.approx((100 * low, 100 * high), abs=0.05)
        assert int(row[5]) == len(files)
        assert measured["latency_ms"] > 0 and measured["latency_iqr_ms"] >= 0
        assert (
            row[6] == f"{measured['latency_ms']:.3f} ms (IQR {measured['latency_iqr_ms']:.3f} ms)"
        )
    assert "CPU figures with the TFLite interpreter: 1 thread, batch 1, the median of 30" in card
    assert f"On this CPU {mode} buys size, not necessarily speed" in card
    calibrated = "calibrated on 48 training images drawn with seed" in card
    assert calibrated == (mode == "int8"), "int8 calibrates on all 48 tiny training images"


@pytest.mark.bad_input
def test_quantize_needs_tflite_in_one_line(tiny_run):
    assert export_parser()._option_string_actions["--quantize"].choices == QUANTIZE
    store = tiny_run[1]
    for fmt in ("keras", "savedmodel"):
        result = run_cli("export", str(store.run_dir), "--format", fmt, "--quantize", "int8")
        assert result.returncode == 2
        (line,) = error_lines(result)
        assert line == (
            "run_search.py: error: --quantize int8 quantizes a TFLite model: add --format tflite "
            "(.keras and SavedModel exports stay float32)"
        )
    assert not (store.run_dir / "export" / "saved_model").exists()


@pytest.mark.bad_input
def test_a_trial_without_a_kept_model_is_refused_naming_the_kept_ones(tiny_run):
    store = tiny_run[1]
    best = store.read_best_hparams()["trial_id"]
    (other,) = set(store.trials()["trial_id"]) - {best}
    result = run_cli("export", str(store.run_dir), "--trial", str(other))
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert line == (
        f"run_search.py: error: trial {other} of {store.run_dir} has no kept model (kept: {best})"
        f"; only the best trial's and, with --objectives, the Pareto front's models are kept"
    )


def test_the_best_trial_exports_by_its_number(tiny_run, tmp_path):
    store = tiny_run[1]
    best = store.read_best_hparams()["trial_id"]
    output = tmp_path / "model.keras"
    result = run_cli("export", str(store.run_dir), "--trial", str(best), "--output", str(output))
    assert result.returncode == 0, error_lines(result)
    card = (tmp_path / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert card.startswith(f"# Model card: tiny\n\nBest trial {best} of a `scratch` search")
    assert "## Deployment" not in card and not (tmp_path / QUANTIZED_NAME).exists()
    labels = json.loads((tmp_path / LABELS_NAME).read_text(encoding="utf-8"))
    assert labels == {"class_names": ["cats", "dogs"], "image_size": 32}
    trained = keras.saving.load_model(store.best_model_path)
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    exported = keras.saving.load_model(output).predict(images, verbose=0)
    np.testing.assert_allclose(exported, trained.predict(images, verbose=0), atol=1e-6)


def test_a_kept_front_trial_exports_with_its_own_card_and_size(tiny_run, tiny_data, tmp_path):
    """The other trial of the run, kept as a Pareto-front trial is (RunStore.keep_models). Its
    model stands in for one of a run that searched the image size: 48 px images resized to the
    32 px the trained layers take, so the export must read the size from the model."""
    run_dir = tmp_path / "front"
    shutil.copytree(tiny_run[1].run_dir, run_dir, ignore=shutil.ignore_patterns("cache", "kt"))
    store = RunStore(run_dir)
    best = store.read_best_hparams()["trial_id"]
    (other,) = set(store.trials()["trial_id"]) - {best}
    trained = keras.saving.load_model(store.best_model_path)
    image = keras.Input((48, 48, 3))
    x = keras.layers.Resizing(32, 32)(image)
    for layer in trained.layers[1:]:  # one chain of layers: a nested model would keep its
        x = layer(x)  # dropout's random ops in the exported graph, which TFLite cannot run
    store.keep_models(keras.Model(image, x), other, front=[best, other])
    result = run_cli("export", str(run_dir), "--trial", str(other), "--format", "tflite")
    assert result.returncode == 0, error_lines(result)
    folder = run_dir / "export"
    labels = json.loads((folder / LABELS_NAME).read_text(encoding="utf-8"))
    assert labels["image_size"] == 48
    card = (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert f"Trial {other} (`export --trial {other}`; the best trial is {best})" in card
    assert "float32 of shape (n, 48, 48, 3)" in card
    row = store.trials().set_index("trial_id").loc[other]
    for name in ("conv_blocks", "learning_rate"):
        assert f"| `{name}` | `{row[f'hp_{name}']}` |" in card
    low, high = accuracy_interval(row["val_accuracy"], len(tiny_data.validation))
    assert (
        f"| validation accuracy | {100 * row['val_accuracy']:.2f}% (95% CI {100 * low:.1f}\u2013"
        f"{100 * high:.1f}, n = {len(tiny_data.validation)}) |" in card
    )
    assert "Test accuracy: not scored (only the best trial's model is scored)." in card
    cli = run_cli("predict", str(folder / "model.tflite"), tiny_data.test.files[0])
    assert cli.returncode == 0, error_lines(cli)
    assert SENTENCE.fullmatch(cli.stdout.strip())


def test_the_card_gives_the_search_figures_beside_the_quantized_ones(tiny_folder, tmp_path):
    """A --measure-deploy run: the card gives the float32 figures trials.csv holds, and the
    export's own float32 conversion, the one its quantization is set beside, is that file."""
    argv = ["--space", "scratch", "--data", str(tiny_folder), "--max-trials", "1", "--epochs"]
    argv += ["1", "--image-size", "32", "--runs-dir", str(tmp_path), "--name", "m"]
    search = run_cli(*argv, "--measure-deploy")
    assert search.returncode == 0, error_lines(search)[-5:]
    store = RunStore(tmp_path / "m")
    result = run_cli("export", str(store.run_dir), "--format", "tflite", "--quantize", "int8")
    assert result.returncode == 0, error_lines(result)
    folder = store.run_dir / "export"
    card = (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    best = store.best_trial()
    assert (
        f"Measured in the search (`--measure-deploy`): float32 TFLite {best['tflite_kb']:,.1f} "
        f"KB, median latency {best['latency_ms']:.3f} ms (IQR {best['latency_iqr_ms']:.3f} ms)."
    ) in card
    figures = json.loads((folder / QUANTIZED_NAME).read_text(encoding="utf-8"))
    assert figures["models"]["float32"]["tflite_kb"] == pytest.approx(best["tflite_kb"], abs=0.1)
    assert figures["models"]["int8"]["tflite_kb"] == pytest.approx(
        (folder / "model.tflite").stat().st_size / 1024, abs=0.06
    )
    # A later float32 export into the same folder leaves no figures of another model behind.
    assert run_cli("export", str(store.run_dir), "--format", "tflite").returncode == 0
    assert not (folder / QUANTIZED_NAME).exists()
    assert "| int8 (exported) |" not in (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
