"""The Keras-backend benchmark (bench/backends.py) and the GPU check on the PyTorch backend
(bench/gpu_check_torch.sh), each run for real on the tiny folder: quick and on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from conftest import REPO, cli_env

pytestmark = pytest.mark.backends


def test_the_backends_benchmark_measures_a_backend_and_writes_its_table(tiny_folder, tmp_path):
    """--quick on PyTorch: the CNN with its pipeline share, the frozen model on images and on
    cached features (one child), and the time to the first trial through run_search.py."""
    out = tmp_path / "out"
    command = [sys.executable, str(REPO / "bench" / "backends.py"), "--quick"]
    command += ["--backends", "torch", "--cases", "cnn", "frozen"]
    command += ["--data", str(tiny_folder), "--out", str(out)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, env=cli_env())
    print(f"backends.py --quick on PyTorch: {time.perf_counter() - started:.0f}s")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    found = json.loads((out / "backends.json").read_text(encoding="utf-8"))
    speeds = found["summary"]["images_per_s"]
    assert list(speeds) == ["cnn", "frozen", "frozen_cached"]
    assert all(speeds[case]["torch"]["median"] > 0 for case in speeds)
    cached = next(m for m in found["measurements"] if m["case"] == "frozen_cached")
    assert cached["feature_pass_images_per_s"] > 0
    assert 0 < found["summary"]["pipeline_share"]["torch"]["median"] < 10
    assert found["summary"]["first_trial"]["torch"]["first_trial_s"]["median"] > 0
    assert found["versions"]["torch"]["torch"]
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "<!-- backends:begin -->" in readme
    assert "| the documents' 3-block CNN (seed000_cnn) |" in readme


def test_the_torch_gpu_check_takes_its_steps_on_the_cpu(tiny_folder, tmp_path):
    """bench/gpu_check_torch.sh --cpu: a fine-tune trial (float32 only: float16 is emulated on
    a CPU) and two searches sharing the device, on the PyTorch backend, tiny, no install; the
    two searches started together, as on the GPU machine, which has no PostgreSQL."""
    out = tmp_path / "gpu_check_torch.json"
    command = ["bash", "bench/gpu_check_torch.sh", "--cpu", "--data", str(tiny_folder)]
    command += ["--out", str(out), "--sharing", "processes"]
    env = cli_env() | {"PYTHON": sys.executable}
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    print(f"gpu_check_torch.sh --cpu: {time.perf_counter() - started:.0f}s")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    found = json.loads(out.read_text())
    steps = found["steps"]
    assert found["mode"] == "cpu"
    assert (steps["devices"]["keras_backend"], steps["devices"]["problems"]) == ("torch", [])
    assert steps["devices"]["keras_tensor_device"] == "cpu"
    assert "fine_tune_on" not in steps
    trial = steps["fine_tune_off"]
    assert (trial["exit_status"], trial["trials_complete"], trial["devices"]) == (0, 1, ["CPU"])
    assert (trial["keras_backend"], trial["precision"]) == ("torch", "float32")
    assert list(trial["phases"]) == ["train", "fine_tune"]
    assert trial["torch"][0]["cuda_initialized"] is False
    sharing = steps["sharing"]
    assert (sharing["how"], sharing["exit_status"]) == ("processes", 0)
    assert [run["trials_complete"] for run in sharing["runs"]] == [1, 1]
    assert found["summary"]["images_per_s_float32"] > 0
    assert found["summary"]["trials_on_gpu"] is False
    assert trial["gpu"] is None and sharing["gpu"] is None  # no nvidia-smi on a CPU run
