#!/usr/bin/env bash
# GPU check (bench/README.md, "GPU check"), from the repo root of a machine with an NVIDIA GPU:
#
#   bash bench/gpu_check.sh          # about 5 minutes once installed; bench/results/gpu_check.json
#   bash bench/gpu_check.sh --cpu    # the same steps on the CPU, tiny: checks the script itself
#
# Options: --data DIR (default ../shared/data/cats_and_dogs_filtered, else the Keras download),
# --out FILE (default bench/results/gpu_check.json, or $GPU_CHECK_OUT).
#
# Steps: install; TensorFlow sees the GPU, memory growth is on and the data tensors stay on the
# host; one mixed-precision fine-tune trial of the transfer space; two --workers sharing one GPU
# through a throwaway PostgreSQL cluster. Training images/s per phase come from each run's
# epochs.csv (an epoch's seconds include its validation pass); GPU use from nvidia-smi samples.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=gpu
data=../shared/data/cats_and_dogs_filtered
out=${GPU_CHECK_OUT:-bench/results/gpu_check.json}
while (($#)); do
  case $1 in
    --cpu) mode=cpu ;;
    --data) data=$2; shift ;;
    --out) out=$2; shift ;;
    *) echo "gpu_check.sh: unknown option $1 (--cpu, --data DIR, --out FILE)" >&2; exit 2 ;;
  esac
  shift
done
[ -d "$data" ] || data=cats_and_dogs_filtered  # found in the Keras cache, or downloaded
weights=../shared/data/keras-models/mobilenet_v2_1.0_160_stanford-dogs_no_top.weights.h5
[ -f "$weights" ] || weights=imagenet

if [ "$mode" = gpu ]; then
  size=160 epochs=3 trials=4 workers_size=128 precision=on memory_mb=8192
  python -m pip install --quiet --disable-pip-version-check -e ".[gpu]"
  # The GPU TensorFlow calls GPU:0, where both steps run: the first visible one.
  visible=${CUDA_VISIBLE_DEVICES:-0}
  one_gpu=${visible%%,*}
else
  # float16 on a CPU is emulated and slow: the CPU run keeps float32.
  size=32 epochs=1 trials=2 workers_size=32 precision=off memory_mb=1024
  # Never reinstall TensorFlow here: the [gpu] extra is for GPU machines only.
  python -c "import search, tensorflow" 2>/dev/null || python -m pip install --quiet -e .
  one_gpu=
fi

work=$(mktemp -d)
pg=$(mktemp -d)
sampler=
pg_stop=()
cleanup() {
  [ -z "$sampler" ] || kill "$sampler" 2>/dev/null || true
  [ ${#pg_stop[@]} = 0 ] || "${pg_stop[@]}" >/dev/null 2>&1 || true
  rm -rf "$work" "$pg"
}
trap cleanup EXIT

# nvidia-smi samples of one step's GPU use, every half second, in $work/<step>.smi.
sample() {
  [ "$mode" = gpu ] || return 0
  nvidia-smi -i "$one_gpu" --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits \
    -lms 500 </dev/null >"$work/$1.smi" 2>/dev/null &
  sampler=$!
}
stop_sampling() {
  [ -z "$sampler" ] || { kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true; }
  sampler=
}

# step NAME COMMAND...: run it with its output in $work/NAME.log, timed, and keep its status.
step() {
  local name=$1 start status
  shift
  echo "== $name"
  sample "$name"
  start=$(date +%s.%N)
  set +e
  "$@" >"$work/$name.log" 2>&1
  status=$?
  set -e
  stop_sampling
  echo "$status $(date +%s.%N) $start" >"$work/$name.status"
  if [ "$status" != 0 ]; then
    echo "$name failed (exit $status):" >&2
    tail -n 40 "$work/$name.log" >&2
  fi
}

step devices python - "$mode" "$work/devices.json" <<'PY'
import json
import os
import sys

import numpy as np
import tensorflow as tf  # importing it starts nothing: configure_devices comes first

from search.devices import configure_devices
from search.runtime.tensorflow import _tensor

devices = configure_devices()
gpus = tf.config.list_physical_devices("GPU")
with tf.device("/GPU:0" if gpus else "/CPU:0"):  # where a model runs
    images = _tensor(np.zeros((64, 32, 32, 3), np.uint8))
    total = tf.reduce_sum(tf.cast(images, tf.float32))
found = {
    "configured": devices,
    "tensorflow_gpus": [gpu.name for gpu in gpus],
    "memory_growth": [tf.config.experimental.get_memory_growth(gpu) for gpu in gpus],
    "data_tensor_device": images.device,
    "op_device": total.device,
    "versions": {"tensorflow": tf.__version__, "python": sys.version.split()[0]},
    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
}
print(json.dumps(found, indent=1))
with open(sys.argv[2], "w") as handle:
    json.dump(found, handle)
problems = []
if sys.argv[1] == "gpu" and not gpus:
    problems.append("TensorFlow sees no GPU")
if not all(found["memory_growth"]):
    problems.append("memory growth is off")
if not images.device.endswith("CPU:0"):
    problems.append(f"the data tensor is on {images.device}")
sys.exit("; ".join(problems) or None)
PY

step fine_tune python run_search.py --space transfer --fix mode=fine_tune \
  --mixed-precision "$precision" --data "$data" --weights "$weights" --image-size "$size" \
  --max-trials 1 --epochs "$epochs" --runs-dir "$work/runs" --name fine_tune

# Two workers on one GPU, through a throwaway PostgreSQL cluster (as tests/conftest.py starts it).
pg_bin() {
  command -v "$1" || { ls /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1; } \
    || true
}
if [ -z "$(pg_bin initdb)" ] && [ "$mode" = gpu ] && [ "$(id -u)" = 0 ] \
  && command -v apt-get >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } \
    >/dev/null || echo "could not install postgresql with apt-get" >&2
fi
initdb=$(pg_bin initdb)
pg_ctl=$(pg_bin pg_ctl)
if [ -n "$initdb" ] && [ -n "$pg_ctl" ]; then
  as_user=()
  if [ "$(id -u)" = 0 ]; then  # PostgreSQL refuses to run as root
    as_user=(runuser -u postgres --)
    chown postgres "$pg"
  fi
  port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
  "${as_user[@]}" "$initdb" -D "$pg/data" -U postgres --auth=trust >/dev/null
  "${as_user[@]}" "$pg_ctl" -D "$pg/data" -l "$pg/log" -w start \
    -o "-p $port -k $pg -c listen_addresses=127.0.0.1" >/dev/null
  pg_stop=("${as_user[@]}" "$pg_ctl" -D "$pg/data" -m immediate stop)
  storage="postgresql://postgres@127.0.0.1:$port/postgres"
  step workers env ${one_gpu:+CUDA_VISIBLE_DEVICES=$one_gpu} python run_search.py \
    --space scratch --backend optuna --workers 2 --storage "$storage" --pruner none \
    --gpu-memory-mb "$memory_mb" --data "$data" --image-size "$workers_size" \
    --max-trials "$trials" --epochs "$epochs" --runs-dir "$work/runs" --name workers
else
  storage=
  echo "no PostgreSQL server binaries (initdb, pg_ctl): the workers step is left out" >&2
fi

mkdir -p "$(dirname "$out")"
python - "$mode" "$work" "$out" "$storage" <<'PY'
import csv
import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

mode, work, out, storage = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
NOTICES = ("warning:", " ignored: ", "--jit on:")


def gpu_use(name: str) -> dict | None:
    """Mean and peak utilisation (%) and peak memory (MiB) over a step's samples."""
    path = work / f"{name}.smi"
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append([float(v) for v in line.split(",")])
            except ValueError:  # a header or a cut-off last line
                continue
    if not rows:
        return None
    busy = [r[0] for r in rows]
    return {
        "samples": len(rows),
        "utilization_mean_pct": round(sum(busy) / len(busy), 1),
        "utilization_max_pct": max(busy),
        "memory_used_max_mib": max(r[1] for r in rows),
    }


def phases(run_dir: Path) -> dict:
    """Training images/s per phase: training images x epochs / the epochs' seconds, over all
    epochs and over the epochs after each trial's first of the phase (which traces and
    compiles)."""
    info = json.loads((run_dir / "run.json").read_text())
    train = sum(info["counts"]["train"].values())
    with open(run_dir / "epochs.csv") as handle:
        epochs = list(csv.DictReader(handle))
    found = {}
    for phase in dict.fromkeys(e["phase"] for e in epochs):  # in training order
        rows = [e for e in epochs if e["phase"] == phase]
        firsts = {}
        for row in rows:
            firsts.setdefault(row["trial_id"], row)
        later = [r for r in rows if firsts[r["trial_id"]] is not r]
        seconds = sum(float(r["seconds"]) for r in rows)
        later_s = sum(float(r["seconds"]) for r in later)
        found[phase] = {
            "epochs": len(rows),
            "train_images_per_epoch": train,
            "seconds": round(seconds, 2),
            "images_per_s": round(train * len(rows) / seconds, 1),
            "images_per_s_after_first_epoch": round(train * len(later) / later_s, 1)
            if later
            else None,
        }
    return found


def concurrency(run_dir: Path) -> int:
    """The most trials that ran at once, from the study's start and end times."""
    import optuna

    study = optuna.load_study(study_name=run_dir.name, storage=storage)
    events = []
    for trial in study.trials:
        if trial.datetime_start and trial.datetime_complete:
            events += [(trial.datetime_start, 1), (trial.datetime_complete, -1)]
    running = most = 0
    for _, change in sorted(events):
        running += change
        most = max(most, running)
    return most


def step(name: str) -> dict | None:
    status_file = work / f"{name}.status"
    if not status_file.exists():
        return None
    status, end, start = status_file.read_text().split()
    found = {"exit_status": int(status), "wall_s": round(float(end) - float(start), 1)}
    # Our one-line warnings and notes (device set-up, ignored options, XLA fall-backs).
    log = (work / f"{name}.log").read_text(errors="replace").splitlines()
    found["notices"] = sorted({line for line in log if any(m in line for m in NOTICES)})
    if name != "devices":
        run_dir = work / "runs" / name
        if (run_dir / "trials.csv").exists():
            with open(run_dir / "trials.csv") as handle:
                trials = list(csv.DictReader(handle))
            info = json.loads((run_dir / "run.json").read_text())
            found |= {
                "command": info["command"],
                "precision": info["precision"],
                "devices": info["devices"],
                "trials": len(trials),
                "trials_complete": sum(t["status"] == "complete" for t in trials),
                "best_val_accuracy": max(
                    (float(t["val_accuracy"]) for t in trials if t["val_accuracy"]), default=None
                ),
                "phases": phases(run_dir),
            }
            if name == "workers":
                found |= {"workers": 2, "max_concurrent_trials": concurrency(run_dir)}
    found["gpu"] = gpu_use(name)
    return found


devices = work / "devices.json"
result = {
    "mode": mode,
    "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    "machine": platform.platform(),
    "devices": json.loads(devices.read_text()) if devices.exists() else None,
    "steps": {name: step(name) for name in ("devices", "fine_tune", "workers")},
}
out.write_text(json.dumps(result, indent=1) + "\n")
print(f"wrote {out}")
for name, found in result["steps"].items():
    if found is None:
        print(f"{name}: not run")
        continue
    line = f"{name}: exit {found['exit_status']}, {found['wall_s']} s"
    for phase, speed in (found.get("phases") or {}).items():
        line += f"; {phase} {speed['images_per_s']} images/s"
    if found["gpu"]:
        line += f"; GPU {found['gpu']['utilization_mean_pct']}% busy on average"
        line += f", {found['gpu']['memory_used_max_mib']:.0f} MiB at most"
    print(line)
failed = [n for n, f in result["steps"].items() if f is None or f["exit_status"] != 0]
sys.exit(f"gpu_check.sh: failed or not run: {', '.join(failed)}" if failed else None)
PY
