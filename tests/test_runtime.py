"""The seam to the Keras backend (search/runtime/): the TensorFlow runtime provides the whole
interface, its pipelines feed a real fit, it tells a real failed allocation from other errors,
its TFLite file and SavedModel loading predict as Keras does, its TensorBoard callbacks write
HParams; every backend's runtime (PyTorch, JAX) provides the interface and KERAS_BACKEND picks
it; the portable pipeline covers every row in a seeded order; an unknown backend is refused by
name, and nothing else of search/ imports TensorFlow.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import subprocess
import sys

import keras
import keras_tuner as kt
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO

from search.errors import UsageError
from search.runtime import RUNTIMES, Runtime, get_runtime
from search.runtime.batches import ArrayBatches
from search.runtime.tensorflow import TensorFlowRuntime

pytestmark = pytest.mark.filterwarnings(r"ignore:\s*Warning. tf.lite.Interpreter is deprecated")


def tiny_data(n: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes a dense layer separates: bright and dark 4x4 uint8 images."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int64)
    x = np.where(y[:, None, None, None] == 1, 200, 40) + rng.integers(-30, 30, (n, 4, 4, 3))
    return x.astype(np.uint8), y


def tiny_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return model


@pytest.mark.parametrize("backend", list(RUNTIMES))
def test_every_backends_runtime_provides_every_method_of_the_interface(backend):
    """Each method of the Protocol, with its parameters, as the backend test does for Backend."""
    module, name = RUNTIMES[backend]
    implementation = getattr(importlib.import_module(module), name)
    assert implementation.name == backend and implementation.compiler
    for method, declared in vars(Runtime).items():
        if method.startswith("_") or not inspect.isfunction(declared):
            continue
        wanted = inspect.signature(declared).parameters
        provided = inspect.signature(getattr(implementation, method)).parameters
        assert list(provided) == list(wanted), method
        assert [p.kind for p in provided.values()] == [p.kind for p in wanted.values()], method


def test_the_active_backends_runtime_is_one_per_process():
    runtime = get_runtime()
    assert runtime is get_runtime()  # one per process: its tensor cache serves every trial
    assert isinstance(runtime, TensorFlowRuntime) and isinstance(runtime, Runtime)
    assert runtime.name == keras.backend.backend() == "tensorflow"


def test_an_unknown_backend_is_refused_by_name():
    with pytest.raises(UsageError, match=r"Keras backend 'mxnet' is not supported.*torch, jax"):
        get_runtime("mxnet")


@pytest.mark.parametrize(("backend", "runtime"), [("torch", "TorchRuntime"), ("jax", "JaxRuntime")])
def test_the_active_backend_is_read_from_keras(backend, runtime, tmp_path):
    """KERAS_BACKEND, as a PyTorch or JAX user sets it, picks that backend's runtime."""
    code = (
        "from search.runtime import get_runtime\nr = get_runtime()\nprint(type(r).__name__, r.name)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"KERAS_BACKEND": backend, "KERAS_HOME": str(tmp_path), "PATH": ""},
        timeout=120,
    )
    assert result.stdout.split() == [runtime, backend], result.stderr[-2000:]


def test_importing_the_seam_imports_no_keras():
    code = "import sys, search.runtime, search.console; print('keras' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.stdout.strip() == "False", result.stderr[-2000:]


@pytest.mark.parametrize("limit", [2**30, 0], ids=["held-whole", "read-per-batch"])
def test_the_pipelines_feed_a_real_fit(limit, tmp_path):
    """Training batches cover every row once an epoch, in a new seeded order each epoch; the
    model learns from them; evaluation and subset batches come in order. `limit` 0 reads every
    batch from a memory map, as a data set larger than memory is read."""
    x, y = tiny_data()
    if limit == 0:
        mapped = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", x.dtype, x.shape)
        mapped[:] = x
        x = mapped
    runtime = get_runtime()
    train = runtime.training_dataset(x, y, 32, seed=3, limit=limit, drop_remainder=False)
    epochs = [np.concatenate([b.numpy() for _, b in train]) for _ in range(2)]
    assert all(sorted(labels.tolist()) == sorted(y.tolist()) for labels in epochs)
    first = np.concatenate([images.numpy() for images, _ in train])
    assert first.dtype == np.uint8 and first.shape == x.shape
    model = tiny_model()
    history = model.fit(train, epochs=8, verbose=0, shuffle=False)
    assert history.history["loss"][-1] < history.history["loss"][0]
    evaluation = runtime.evaluation_dataset(x, y, 32, limit=limit)
    assert model.evaluate(evaluation, verbose=0)[1] >= 0.95
    gathered = np.concatenate([images.numpy() for images, _ in evaluation])
    np.testing.assert_array_equal(gathered, x)
    rows = np.array([5, 0, 77, 5])
    subset = runtime.subset_dataset(x, y, rows, batch_size=3, limit=limit)
    batches = list(subset.as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x[rows])
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y[rows])


def test_a_dropped_remainder_gives_full_batches_only():
    x, y = tiny_data(70)
    train = get_runtime().training_dataset(x, y, 32, seed=0, limit=2**30, drop_remainder=True)
    assert [len(labels) for _, labels in train] == [32, 32]


def test_a_real_failed_allocation_is_out_of_memory_and_other_errors_are_not():
    runtime = get_runtime()
    with pytest.raises(tf.errors.ResourceExhaustedError) as raised:
        tf.zeros((2**38,), tf.float32)  # 1 TiB: the CPU allocator refuses it at once
    assert runtime.is_out_of_memory(raised.value)
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        tf.reshape(tf.zeros((6,)), (4, 4))
    assert not runtime.is_out_of_memory(raised.value)
    cudnn = tf.errors.InternalError(None, None, "cuDNN launch failure: CUDNN_STATUS_ALLOC_FAILED")
    assert runtime.is_out_of_memory(cudnn)
    assert not runtime.is_out_of_memory(MemoryError())


def test_devices_on_a_machine_without_a_gpu():
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible")
    warnings: list[str] = []
    assert get_runtime().configure_devices(1024, warn=warnings.append) == []
    assert get_runtime().gpu_compute_capabilities() == []
    assert warnings == []


def test_a_tflite_conversion_predicts_as_keras_does():
    x, y = tiny_data()
    model = tiny_model()
    model.fit(x, y, epochs=3, verbose=0)
    runtime = get_runtime()
    flat = runtime.tflite_bytes(model)
    interpreter = runtime.tflite_interpreter(model_content=flat, num_threads=1)
    (source,), (result,) = interpreter.get_input_details(), interpreter.get_output_details()
    images = x[:8].astype(np.float32)
    interpreter.resize_tensor_input(source["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], images)
    interpreter.invoke()
    expected = model.predict(images, verbose=0)
    np.testing.assert_allclose(interpreter.get_tensor(result["index"]), expected, atol=1e-5)
    dynamic = runtime.tflite_bytes(model, quantize="dynamic")
    assert dynamic != flat and runtime.tflite_interpreter(model_content=dynamic)


def test_a_saved_model_loads_with_its_image_size_and_predicts_as_keras_does(tmp_path):
    x, _ = tiny_data(8)
    model = tiny_model()
    model.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    size, serve = get_runtime().load_saved_model(tmp_path / "saved")
    images = x.astype(np.float32)
    assert size == 4
    np.testing.assert_allclose(serve(images), model.predict(images, verbose=0), atol=1e-6)


def test_tensorboard_callbacks_write_the_curves_and_the_hparams(tmp_path):
    hp = kt.HyperParameters()
    hp.Choice("units", [8, 16])
    hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")
    callbacks = get_runtime().tensorboard_callbacks(hp, tmp_path / "trial_3", 3)
    assert isinstance(callbacks[0], keras.callbacks.TensorBoard) and len(callbacks) == 2
    x, y = tiny_data(32)
    tiny_model().fit(x, y, epochs=1, verbose=0, callbacks=callbacks)
    events = b"".join(p.read_bytes() for p in (tmp_path / "trial_3").rglob("events.out.*"))
    assert b"_hparams_/session_start_info" in events and b"learning_rate" in events
    assert b"epoch_loss" in events


def test_only_the_tensorflow_runtime_imports_tensorflow():
    """Counting imports inside functions: everything else of search/ goes through the seam."""
    importers = []
    for path in sorted((REPO / "search").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(name.split(".")[0] == "tensorflow" for name in names):
                importers.append(str(path.relative_to(REPO)))
                break
    assert importers == ["search/runtime/tensorflow.py"]


def test_the_portable_batches_cover_every_row_in_a_seeded_order_per_epoch(tmp_path):
    """PyTorch's and JAX's pipeline, here under TensorFlow (a PyDataset is backend-neutral):
    every row once an epoch, a new order each epoch that the same seed and epoch give again
    (a resumed run's epoch sees the order an unbroken run's saw), rows read from a memory map,
    a dropped remainder, subsets in their order, and a real fit that learns from it."""
    x, y = tiny_data(70)
    mapped = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", x.dtype, x.shape)
    mapped[:] = x

    def epoch(batches: ArrayBatches) -> tuple[np.ndarray, np.ndarray]:
        rows = [batches[i] for i in range(len(batches))]
        batches.on_epoch_end()
        return np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])

    train = ArrayBatches(mapped, y, 32, seed=3)
    (x1, y1), (x2, _) = epoch(train), epoch(train)
    assert len(x1) == len(x) and sorted(y1.tolist()) == sorted(y.tolist())
    assert not np.array_equal(x1, x2), "the same order two epochs running"
    again = ArrayBatches(x, y, 32, seed=3)
    again.on_epoch_end()
    np.testing.assert_array_equal(epoch(again)[0], x2)
    index = {row.tobytes(): i for i, row in enumerate(x)}
    np.testing.assert_array_equal(y[[index[row.tobytes()] for row in x1]], y1)
    assert len(ArrayBatches(x, y, 32, seed=0, drop_remainder=True)) == 2
    rows = np.array([5, 0, 69, 5])
    np.testing.assert_array_equal(epoch(ArrayBatches(x, y, 3, indices=rows))[0], x[rows])
    model = tiny_model()
    history = model.fit(ArrayBatches(*tiny_data(), 32, seed=0), epochs=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
