"""GPU check on the PyTorch backend of Keras (issue 34), on a machine without TensorFlow:
bench/gpu_check_torch.sh installs the carried wheels and runs this; `--cpu` runs the same steps
on the CPU, tiny, to check the script (tests/test_bench_backends.py).

Steps, each `run_search.py` with KERAS_BACKEND=torch in a process of its own (PROBE records at
its exit what PyTorch and Keras saw: CUDA used, peak memory, where Keras's tensors live, whether
TensorFlow is importable, the versions): one fine-tune trial of the transfer space with
`--mixed-precision on`, then `off` (only `off` on the CPU); two processes sharing the one GPU,
each with `--gpu-memory-mb`: `--workers 2` through a throwaway PostgreSQL cluster where its
server binaries are installed, else (the lent GPU machine has none, and --workers refuses
SQLite) two searches started together. Training images/s per phase come from each run's
epochs.csv (an epoch's seconds include its validation pass), GPU use and memory from nvidia-smi
samples.

    python bench/gpu_check_torch.py [--cpu] [--data DIR] [--weights FILE] [--out FILE]
        [--sharing auto|workers|processes]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CARRIED = REPO / "wheels" / "data"  # bench/gpu_check_torch.sh --prepare
WEIGHTS_NAME = "mobilenet_v2_1.0_160_stanford-dogs_no_top.weights.h5"
SHARED = REPO.parent / "shared" / "data"
GPU = {"size": 160, "epochs": 5, "workers_size": 128, "workers_trials": 4, "memory_mb": 8192}
CPU = {"size": 32, "epochs": 1, "workers_size": 32, "workers_trials": 2, "memory_mb": 1024}
STEP_TIMEOUT_S = 300
# Runs run_search.py in this process and, at its exit, writes to $PEAK_FILE what PyTorch and
# Keras saw: whether CUDA was used, the peak memory, where Keras puts a tensor, the versions.
PROBE = """
import atexit, importlib.util, json, os, runpy, sys

def probe():
    import keras, torch
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    mib = 2**20
    found = {
        "keras_backend": keras.backend.backend(),
        "cuda_initialized": cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "max_memory_allocated_mib": torch.cuda.max_memory_allocated() / mib if cuda else None,
        "max_memory_reserved_mib": torch.cuda.max_memory_reserved() / mib if cuda else None,
        "keras_tensor_device": str(keras.ops.ones((1,)).device),
        "tensorflow_importable": importlib.util.find_spec("tensorflow") is not None,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "keras": keras.__version__,
            "jax": __import__("jax").__version__ if importlib.util.find_spec("jax") else None,
        },
    }
    with open(os.environ["PEAK_FILE"], "w") as handle:
        json.dump(found, handle)

atexit.register(probe)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


class Sampler:
    """nvidia-smi samples of the GPU's use and memory every half second while a step runs."""

    def __init__(self, enabled: bool, path: Path):
        self.path, self.process = path, None
        if enabled and shutil.which("nvidia-smi"):
            query = "--query-gpu=utilization.gpu,memory.used"
            with open(path, "w") as handle:
                self.process = subprocess.Popen(
                    ["nvidia-smi", query, "--format=csv,noheader,nounits", "-lms", "500"],
                    stdout=handle,
                    stderr=subprocess.DEVNULL,
                )

    def stop(self) -> dict | None:
        if self.process is None:
            return None
        self.process.terminate()
        self.process.wait()
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                rows.append([float(value) for value in line.split(",")])
            except ValueError:  # a cut-off last line
                continue
        if not rows:
            return None
        busy = [row[0] for row in rows]
        return {
            "samples": len(rows),
            "utilization_mean_pct": round(sum(busy) / len(busy), 1),
            "utilization_max_pct": max(busy),
            "memory_used_max_mib": max(row[1] for row in rows),
        }


def search_command(args: list[str], peak: Path) -> tuple[list[str], dict[str, str]]:
    command = [sys.executable, "-c", PROBE, str(REPO / "run_search.py"), *args]
    return command, os.environ | {"KERAS_BACKEND": "torch", "PEAK_FILE": str(peak)}


def phases(run_dir: Path) -> dict:
    """Training images/s per phase, over the epochs after each trial's first of the phase
    (which builds and warms up), else over all of them."""
    info = json.loads((run_dir / "run.json").read_text())
    train = sum(info["counts"]["train"].values())
    with open(run_dir / "epochs.csv") as handle:
        epochs = list(csv.DictReader(handle))
    found = {}
    for phase in dict.fromkeys(row["phase"] for row in epochs):
        rows = [row for row in epochs if row["phase"] == phase]
        seen, later = set(), []
        for row in rows:
            if row["trial_id"] in seen:
                later.append(row)
            seen.add(row["trial_id"])
        timed = later or rows
        seconds = sum(float(row["seconds"]) for row in timed)
        found[phase] = {
            "epochs": len(rows),
            "epochs_timed": len(timed),
            "images_per_s": round(train * len(timed) / seconds, 1),
        }
    return found


def trial_rows(run_dir: Path) -> list[dict]:
    if not (run_dir / "trials.csv").exists():
        return []
    with open(run_dir / "trials.csv") as handle:
        return list(csv.DictReader(handle))


def run_record(run_dir: Path) -> dict:
    trials = trial_rows(run_dir)
    if not trials:
        return {}
    info = json.loads((run_dir / "run.json").read_text())
    return {
        "keras_backend": info.get("keras_backend"),
        "precision": info["precision"],
        "devices": info["devices"],
        "trials": len(trials),
        "trials_complete": sum(trial["status"] == "complete" for trial in trials),
        "phases": phases(run_dir),
    }


def step(work: Path, name: str, commands: list[tuple[list[str], dict]], gpu: bool) -> dict:
    """Run `commands` at once (one for most steps), sampling the GPU; their statuses, times,
    logs' last lines and peak CUDA memory."""
    sampler = Sampler(gpu, work / f"{name}.smi")
    start = time.perf_counter()
    ends, statuses = [], []
    with contextlib.ExitStack() as logs:
        processes = []
        for index, (command, env) in enumerate(commands):
            log = logs.enter_context(open(work / f"{name}-{index}.log", "w"))
            processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=log, cwd=REPO))
        for process in processes:
            statuses.append(process.wait(timeout=STEP_TIMEOUT_S))
            ends.append(round(time.perf_counter() - start, 1))
    found = {"exit_status": max(statuses), "wall_s": max(ends), "process_s": ends}
    found["gpu"] = sampler.stop()
    peaks = sorted(work.glob(f"{name}-*.peak.json"))
    found["torch"] = [json.loads(path.read_text()) for path in peaks]
    if found["exit_status"]:
        tails = [
            (work / f"{name}-{i}.log").read_text().splitlines()[-15:] for i in range(len(commands))
        ]
        found["log_tail"] = tails
        print(
            f"{name} failed:\n" + "\n".join(line for tail in tails for line in tail),
            file=sys.stderr,
        )
    return found


def devices(probe: dict, cpu: bool) -> dict:
    """What a search process saw (PROBE), and what is wrong with it."""
    problems = []
    if not cpu and not probe.get("keras_tensor_device", "").startswith("cuda"):
        problems.append(f"Keras's tensors are on {probe.get('keras_tensor_device')}, not the GPU")
    if probe.get("keras_backend") != "torch":
        problems.append(f"the Keras backend is {probe.get('keras_backend')}")
    return probe | {"problems": problems, "exit_status": int(bool(problems))}


def fine_tune(work: Path, data: Path, weights: Path | None, sizes: dict, precision: str) -> dict:
    """One fine-tune trial of the transfer space (scratch, one phase, without weights)."""
    name = f"fine_tune_{precision}"
    space = ["--space", "transfer", "--fix", "mode=fine_tune", "--weights", str(weights)]
    args = [
        *(space if weights else ["--space", "scratch"]),
        *("--mixed-precision", precision, "--data", str(data), "--image-size", str(sizes["size"])),
        *("--max-trials", "1", "--epochs", str(sizes["epochs"]), "--batch-size", "32"),
        *("--runs-dir", str(work / "runs"), "--name", name),
    ]
    found = step(work, name, [search_command(args, work / f"{name}-0.peak.json")], not sizes["cpu"])
    return found | {"space": args[1]} | run_record(work / "runs" / name)


def postgres_binaries() -> tuple[str, str] | None:
    found = []
    for name in ("initdb", "pg_ctl"):
        candidates = [
            shutil.which(name),
            *sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}")),
        ]
        found.append(next((str(c) for c in reversed(candidates) if c), None))
    return (found[0], found[1]) if all(found) else None


def postgres_url(root: Path, binaries: tuple[str, str]) -> tuple[str, list[str]]:
    """A throwaway cluster (as tests/conftest.py starts one): its URL and its stop command."""
    initdb, pg_ctl = binaries
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:  # PostgreSQL refuses to run as root
        shutil.chown(root, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    quiet = {"check": True, "capture_output": True}
    subprocess.run(
        [*as_user, initdb, "-D", f"{root}/data", "-U", "postgres", "--auth=trust"], **quiet
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    start = [
        *as_user,
        pg_ctl,
        "-D",
        f"{root}/data",
        "-l",
        f"{root}/log",
        "-w",
        "start",
        "-o",
        options,
    ]
    subprocess.run(start, **quiet)
    stop = [*as_user, pg_ctl, "-D", f"{root}/data", "-m", "immediate", "stop"]
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", stop


def sharing(work: Path, data: Path, sizes: dict, how: str) -> dict:
    """Two processes on the one GPU, --gpu-memory-mb each: `--workers 2` on one study
    (PostgreSQL), or two searches started together (each its own SQLite study)."""
    common = [
        *("--space", "scratch", "--backend", "optuna", "--pruner", "none", "--data", str(data)),
        *("--gpu-memory-mb", str(sizes["memory_mb"]), "--image-size", str(sizes["workers_size"])),
        *("--epochs", str(sizes["epochs"]), "--runs-dir", str(work / "runs")),
    ]
    trials = str(sizes["workers_trials"])
    if how == "workers":
        # Beside, not inside, the 0700 scratch folder, which the postgres user cannot enter.
        root = Path(tempfile.mkdtemp(prefix="pg-"))
        url, stop = postgres_url(root, postgres_binaries())
        args = [*common, "--workers", "2", "--storage", url, "--max-trials", trials, "--name", "w"]
        try:
            peak = work / "sharing-0.peak.json"  # the parent's: the workers are its children
            found = step(work, "sharing", [search_command(args, peak)], not sizes["cpu"])
        finally:
            subprocess.run(stop, capture_output=True)
            shutil.rmtree(root, ignore_errors=True)
        runs = [work / "runs" / "w"]
    else:
        half = str(sizes["workers_trials"] // 2)
        commands = [
            search_command(
                [*common, "--max-trials", half, "--name", f"p{i}"], work / f"sharing-{i}.peak.json"
            )
            for i in range(2)
        ]
        found = step(work, "sharing", commands, not sizes["cpu"])
        runs = [work / "runs" / f"p{i}" for i in range(2)]
    records = [run_record(run) for run in runs]
    trial_s = sum(float(row["duration_s"]) for run in runs for row in trial_rows(run))
    # Over 1: the processes' trials overlapped in time.
    return found | {
        "how": how,
        "runs": records,
        "trial_seconds": round(trial_s, 1),
        "trial_seconds_per_wall_second": round(trial_s / found["wall_s"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="the same steps on the CPU, tiny")
    parser.add_argument("--data", type=Path, help="photo folder (default: the carried one)")
    parser.add_argument("--weights", type=Path, help="MobileNetV2 weights (default: carried)")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/gpu_check_torch.json")
    parser.add_argument("--sharing", choices=("auto", "workers", "processes"), default="auto")
    args = parser.parse_args()
    data = args.data or next(
        (p for p in (CARRIED / "photos", SHARED / "cats_and_dogs_filtered") if p.is_dir()), None
    )
    weights = args.weights or next(
        (
            p
            for p in (CARRIED / WEIGHTS_NAME, SHARED / "keras-models" / WEIGHTS_NAME)
            if p.is_file()
        ),
        None,
    )
    if data is None:
        parser.error("no photos: pass --data DIR or run bench/gpu_check_torch.sh --prepare")
    sizes = (CPU if args.cpu else GPU) | {"cpu": args.cpu}
    how = args.sharing
    if how == "auto":
        how = "workers" if postgres_binaries() else "processes"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-torch-") as scratch:
        work = Path(scratch)
        # float16 on a CPU is emulated and slow: the CPU run trains in float32 only.
        steps = {}
        for precision in ("off",) if args.cpu else ("on", "off"):
            steps[f"fine_tune_{precision}"] = fine_tune(work, data, weights, sizes, precision)
        steps["devices"] = devices(next(iter(steps["fine_tune_off"]["torch"]), {}), args.cpu)
        steps["sharing"] = sharing(work, data, sizes, how)
    result = summary(args, steps, sizes, data, weights, time.perf_counter() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    failed = [name for name, found in steps.items() if found["exit_status"]]
    sys.exit(f"gpu_check_torch: failed: {', '.join(failed)}" if failed else None)


def summary(args, steps: dict, sizes: dict, data: Path, weights: Path | None, wall: float) -> dict:
    on = steps.get("fine_tune_on", {}).get("phases", {})
    off = steps["fine_tune_off"].get("phases", {})
    last = next(reversed(off), None)  # fine_tune when the transfer space ran, else train
    speeds = {
        "on": on.get(last, {}).get("images_per_s"),
        "off": off.get(last, {}).get("images_per_s"),
    }
    peaks = [
        peak["max_memory_allocated_mib"]
        for found in steps.values()
        for peak in found.get("torch", [])
        if peak.get("max_memory_allocated_mib") is not None
    ]
    return {
        "mode": "cpu" if args.cpu else "gpu",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "install_s": float(os.environ.get("GPU_CHECK_INSTALL_S", 0)) or None,
        "wall_s": round(wall, 1),
        "sizes": sizes,
        "data": str(data),
        "weights": str(weights) if weights else None,
        "steps": steps,
        "summary": {
            "trials_on_gpu": all(
                peak.get("cuda_initialized")
                for name in ("fine_tune_on", "fine_tune_off")
                if name in steps
                for peak in steps[name].get("torch", [{}])
            ),
            "fine_tune_phase": last,
            "images_per_s_mixed_precision": speeds["on"],
            "images_per_s_float32": speeds["off"],
            "mixed_precision_speedup": round(speeds["on"] / speeds["off"], 2)
            if speeds["on"] and speeds["off"]
            else None,
            "sharing": steps["sharing"]["how"],
            "sharing_trial_seconds_per_wall_second": steps["sharing"].get(
                "trial_seconds_per_wall_second"
            ),
            "peak_torch_memory_allocated_mib": round(max(peaks), 1) if peaks else None,
            "peak_gpu_memory_used_mib": max(
                (f["gpu"]["memory_used_max_mib"] for f in steps.values() if f.get("gpu")),
                default=None,
            ),
        },
    }


if __name__ == "__main__":
    main()
