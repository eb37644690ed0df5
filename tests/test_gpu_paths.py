"""The GPU code paths, checked on a CPU: device set-up before TensorFlow's runtime starts,
workers' GPUs, out-of-memory errors, data held on the host, the per-epoch NaN check and XLA.

No TensorFlow function is replaced: the errors are TensorFlow's own classes, raised by real
graphs, and the device checks run in fresh processes, where the runtime has not started yet.
"""

from __future__ import annotations

import glob
import json
import shutil
import subprocess
import sys

import keras
import keras_tuner as kt
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO
from keras.src.utils.python_utils import is_default

from search.callbacks import StopOnNaN
from search.cli import parse_search
from search.devices import configure_devices, is_out_of_memory
from search.features import FeatureCache, FrozenSplit
from search.inputs import training_dataset
from search.steps import SearchConfig
from search.store import RunStore
from search.trial import TrainSettings, TrialRunner
from search.trial_edge import TrialRequest
from search.weights import _not_downloaded
from search.workers import worker_argv, worker_gpu
from spaces import Space, get_space
from spaces.context import SpaceContext


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


# Wraps configure_devices (ours, not TensorFlow's) to ask TensorFlow, when it is first called,
# whether its runtime has started: a device's logical configuration, like GPU memory growth,
# is refused with RuntimeError once it has. Then the process ends; what follows is not tested.
ORDER_PROBE = """
import json, sys
import tensorflow as tf
import search.devices as devices

configure = devices.configure_devices

def probed(*args, **kwargs):
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()])
        print("configured before the runtime started")
    except RuntimeError:
        print("configured after the runtime started")
    configure(*args, **kwargs)
    sys.exit(0)

devices.configure_devices = probed
from search.steps import SearchConfig, run_search
run_search(SearchConfig(**json.loads(sys.argv[1])))
print("configure_devices was never called")
"""


@pytest.mark.parametrize("space", ["transfer", "scratch"])
def test_devices_are_configured_before_tensorflow_starts(
    space, tiny_folder, weights_file, tmp_path
):
    """The transfer space builds MobileNetV2 to check --weights before the run exists; that
    starts TensorFlow's runtime, after which GPU memory growth can no longer be set."""
    settings = {
        "space": space,
        "data": str(tiny_folder),
        "weights": str(weights_file),
        "image_size": 32,
        "max_trials": 1,
        "epochs": 1,
        "runs_dir": str(tmp_path),
        "name": "order",
    }
    result = run_python(ORDER_PROBE, json.dumps(settings))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "configured before the runtime started"


# Two logical CPUs stand in for a host and a GPU: the data tensor must stay on the first even
# when it is made inside the device scope a model runs in.
PLACEMENT_PROBE = """
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from search.runtime.tensorflow import _tensor

with tf.device("/CPU:1"):
    print(_tensor(np.zeros((4, 3), np.uint8)).device)
"""


def test_image_and_feature_tensors_are_held_on_the_host():
    result = run_python(PLACEMENT_PROBE)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("CPU:0")


def test_workers_take_the_parents_visible_gpus_in_turn():
    assert [worker_gpu(i, 2, "2,3") for i in range(4)] == ["2", "3", "2", "3"]
    assert [worker_gpu(i, 2, None) for i in range(3)] == ["0", "1", "0"]
    assert [worker_gpu(i, 2, " 5 , 7 ") for i in range(2)] == ["5", "7"]
    uuids = "GPU-aaaa,GPU-bbbb"
    assert [worker_gpu(i, 2, uuids) for i in range(3)] == ["GPU-aaaa", "GPU-bbbb", "GPU-aaaa"]
    # CUDA stops at the first entry it cannot use: the parent's TensorFlow saw 2 GPUs.
    assert [worker_gpu(i, 2, "1,4,99") for i in range(3)] == ["1", "4", "1"]


def test_gpu_memory_limit_reaches_the_workers_and_is_ignored_without_a_gpu(capsys):
    config = parse_search(["--gpu-memory-mb", "2048", "--workers", "2", "--backend", "optuna"])
    assert config.gpu_memory_mb == 2048
    argv = worker_argv(config, 1)
    assert argv[argv.index("--gpu-memory-mb") + 1] == "2048"
    assert parse_search(argv[2:]).gpu_memory_mb == 2048
    assert "--gpu-memory-mb" not in worker_argv(SearchConfig(), 0)
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible: the limit applies")
    assert configure_devices(2048) == ["CPU"]
    assert capsys.readouterr().out == "--gpu-memory-mb 2048 ignored: no GPU is visible\n"


def test_out_of_memory_is_recognised_from_tensorflows_error_classes():
    oom = [
        tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor"),
        tf.errors.InternalError(None, None, "cuDNN launch failure: CUDNN_STATUS_ALLOC_FAILED"),
        tf.errors.InternalError(None, None, "Blas xGEMM launch failed: CUBLAS_STATUS_ALLOC_FAILED"),
        tf.errors.UnknownError(None, None, "CUDA_ERROR_OUT_OF_MEMORY: Out Of Memory"),
        tf.errors.InternalError(None, None, "Failed copying input tensor: OOM"),
    ]
    other = [
        tf.errors.InternalError(None, None, "Blas GEMM launch failed"),
        tf.errors.UnknownError(None, None, "JIT compilation failed for layer random_zoom"),
        tf.errors.InvalidArgumentError(None, None, "out of memory is not this error's kind"),
        ValueError("out of memory"),
        MemoryError(),
    ]
    assert [is_out_of_memory(error) for error in oom] == [True] * len(oom)
    assert [is_out_of_memory(error) for error in other] == [False] * len(other)


def allocation_fails_above(batch: int, error: Exception) -> keras.layers.Layer:
    """A layer that passes its input on, and raises `error` inside the graph (a cuDNN or
    allocator failure's stand-in) for batches larger than `batch`."""

    def check(size):
        if size > batch:
            raise error
        return np.bool_(True)

    class FailsAbove(keras.layers.Layer):
        def call(self, x):
            ok = tf.numpy_function(check, [tf.shape(x)[0]], tf.bool)
            with tf.control_dependencies([ok]):
                return tf.identity(x)

    return FailsAbove()


def cudnn_oom() -> tf.errors.InternalError:
    return tf.errors.InternalError(None, None, "CUDNN_STATUS_ALLOC_FAILED")


def test_a_cudnn_allocation_failure_is_retried_at_half_batch(tiny_data, tmp_path, capsys):
    """cuDNN reports failed allocations as internal errors, which TensorFlow raises from a
    graph as UnknownError: the trial is retried at half its batch, as for OOM."""

    def build(hp, ctx):
        inputs = keras.Input(ctx.input_shape)
        x = allocation_fails_above(8, cudnn_oom())(inputs)
        outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(x))
        model = keras.Model(inputs, outputs)
        model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
        return model

    store = RunStore(tmp_path / "run")
    store.create()
    settings = TrainSettings(epochs=1, batch_size=16)
    runner = TrialRunner(
        Space("cudnn", build), SpaceContext(32, 2), tiny_data, store=store, settings=settings
    )
    result, _ = runner.run(TrialRequest(0, kt.HyperParameters()))
    assert "out of memory at batch 16; retrying once at batch 8" in capsys.readouterr().out
    assert (result.status, result.batch_size) == ("complete", 8)


def test_the_feature_pass_halves_its_batch_when_out_of_memory(tiny_data, capsys):
    inputs = keras.Input((32, 32, 3))
    front = keras.Model(inputs, allocation_fails_above(16, MemoryError())(inputs))
    cache = FeatureCache(tiny_data, None, batch_size=64)
    features, source = cache.features(FrozenSplit(front, front, front), "key")
    assert source == "computed" and cache.batch_size == 16
    assert [len(features[name]) for name in ("train", "validation")] == [
        len(tiny_data.train),
        len(tiny_data.validation),
    ]
    out = capsys.readouterr().out
    assert out.count("feature pass: out of memory") == 2 and "retrying at batch 16" in out


def test_the_nan_check_runs_once_an_epoch_and_stops_a_diverging_trial(tiny_data, tmp_path):
    # Keras dispatches callbacks asynchronously only while none overrides a train batch hook;
    # Keras's TerminateOnNaN does.
    hooks = ("on_batch_end", "on_train_batch_end")
    assert all(is_default(getattr(StopOnNaN(), hook)) for hook in hooks)
    assert not all(is_default(getattr(keras.callbacks.TerminateOnNaN(), hook)) for hook in hooks)
    store = RunStore(tmp_path / "run")
    store.create()
    settings = TrainSettings(epochs=4, patience=4, batch_size=16)
    runner = TrialRunner(
        get_space("scratch"), SpaceContext(32, 2), tiny_data, store=store, settings=settings
    )
    hp = kt.HyperParameters()
    hp.Fixed("learning_rate", 1e30)
    result, model = runner.run(TrialRequest(0, hp))
    assert (result.status, result.error, model) == ("failed", "nan_loss", None)
    losses = store.epochs()["loss"].astype(float).to_numpy()  # NaN is stored as empty
    # Training stopped at the end of the first epoch whose loss was not finite.
    assert not np.isfinite(losses[-1]) and np.isfinite(losses[:-1]).all()
    assert len(losses) < settings.epochs


def test_jit_on_names_the_trials_and_layers_that_fall_back(tiny_data, tmp_path, capsys):
    store = RunStore(tmp_path / "run")
    store.create()
    ctx = SpaceContext(32, 2)
    settings = TrainSettings(epochs=1, batch_size=20, jit="on")  # 48 images: a batch of 8 left
    augment = TrialRunner(get_space("augment"), ctx, tiny_data, store=store, settings=settings)
    hp = kt.HyperParameters()
    hp.Fixed("rotation", 0.1)
    hp.Fixed("zoom", 0.2)
    result, _ = augment.run(TrialRequest(0, hp))
    out = capsys.readouterr().out
    assert "trial 0: --jit on: trained without XLA (rotation, zoom)" in out
    assert (result.status, result.jit) == ("complete", False)
    scratch = TrialRunner(get_space("scratch"), ctx, tiny_data, store=store, settings=settings)
    result, _ = scratch.run(TrialRequest(1, kt.HyperParameters()))
    assert (result.status, result.jit) == ("complete", True)
    assert "--jit on" not in capsys.readouterr().out
    assert store.trials().set_index("trial_id")["jit"].tolist() == [False, True]


def test_xla_batches_drop_the_ragged_remainder_but_never_every_batch():
    x, y = np.zeros((10, 2), np.float32), np.zeros(10, np.float32)

    def sizes(n: int, drop: bool) -> list[int]:
        data = training_dataset(x[:n], y[:n], 4, seed=0, drop_remainder=drop)
        return [len(batch_y) for _, batch_y in data]

    assert sizes(10, drop=False) == [4, 4, 2]
    assert sizes(10, drop=True) == [4, 4]
    assert sizes(3, drop=True) == [3]  # fewer images than a batch: the one batch is kept


def test_only_download_and_file_errors_mean_the_weights_are_unavailable(tmp_path):
    with pytest.raises(Exception) as fetch:  # get_file raises a bare Exception
        keras.utils.get_file(
            "absent.h5", f"file://{tmp_path}/absent.h5", cache_dir=str(tmp_path / "cache")
        )
    assert "URL fetch failure" in str(fetch.value)
    assert _not_downloaded(fetch.value)
    assert _not_downloaded(OSError("Unable to synchronously open file"))
    assert _not_downloaded(ValueError("Incomplete or corrupted file detected"))
    assert not _not_downloaded(tf.errors.InternalError(None, None, "CUDA_ERROR_OUT_OF_MEMORY"))
    assert not _not_downloaded(tf.errors.ResourceExhaustedError(None, None, "OOM"))
    assert not _not_downloaded(RuntimeError("CUDA driver version is insufficient"))


@pytest.mark.usefixtures("weights_file")  # the script uses the shared weights file
def test_the_gpu_check_script_takes_its_steps_on_the_cpu(tiny_folder, tmp_path):
    """bench/gpu_check.sh --cpu: the GPU check's steps, tiny, without a GPU or nvidia-smi; its
    two workers share the CPU through a throwaway PostgreSQL cluster."""
    if not (shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb")):
        pytest.skip("PostgreSQL server binaries are not installed: the workers step needs them")
    out = tmp_path / "gpu_check.json"
    result = subprocess.run(
        ["bash", "bench/gpu_check.sh", "--cpu", "--data", str(tiny_folder), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    found = json.loads(out.read_text())
    assert found["mode"] == "cpu"
    assert found["devices"]["configured"] == ["CPU"]
    assert found["devices"]["data_tensor_device"].endswith("CPU:0")
    steps = found["steps"]
    assert [steps[name]["exit_status"] for name in ("devices", "fine_tune", "workers")] == [0] * 3
    fine_tune, workers = steps["fine_tune"], steps["workers"]
    assert (fine_tune["trials_complete"], fine_tune["precision"]) == (1, "float32")
    assert list(fine_tune["phases"]) == ["train", "fine_tune"]
    assert all(phase["images_per_s"] > 0 for phase in fine_tune["phases"].values())
    assert (workers["workers"], workers["trials"], workers["trials_complete"]) == (2, 2, 2)
    assert "--gpu-memory-mb 1024 ignored: no GPU is visible" in workers["notices"]
    assert fine_tune["gpu"] is None and workers["gpu"] is None  # no nvidia-smi on a CPU run
