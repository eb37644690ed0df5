"""`--workers N`: N processes share one Optuna study, each a plain run of the same command.

A worker is this program started again with `--worker`, so it loads the run's cached images and
runs trials until the study holds --max-trials of them. With several GPUs the workers take the
visible ones in turn (`CUDA_VISIBLE_DEVICES`), so more workers than GPUs share them; with one
GPU or none, every worker sees what the parent sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

RUN_SEARCH = Path(__file__).resolve().parents[1] / "run_search.py"


def worker_argv(config, index: int) -> list[str]:
    """The command line that reproduces `config` in worker number `index`."""
    argv = [sys.executable, str(RUN_SEARCH)]
    for field in fields(config):
        value = getattr(config, field.name)
        flag = "--" + field.name.replace("_", "-")
        per_process = ("worker", "worker_index", "resume", "workers")
        if field.name in per_process or value is None or value is False:
            continue
        if isinstance(value, list | tuple):  # a repeated option, such as --fix
            argv += [part for item in value for part in (flag, str(item))]
        else:
            argv += [flag] if value is True else [flag, str(value)]
    return [*argv, "--worker", "--worker-index", str(index)]


def worker_gpu(index: int, gpus: int, visible: str | None) -> str:
    """The CUDA_VISIBLE_DEVICES of worker `index`: one of the parent's `gpus` GPUs, round-robin.
    `visible` is the parent's CUDA_VISIBLE_DEVICES: the child's replaces it, so it must name a
    GPU as the parent's does (a number or UUID from that list); unset, GPUs 0..gpus-1."""
    named = [part.strip() for part in (visible or "").split(",") if part.strip()]
    pool = named[:gpus] if named else [str(number) for number in range(gpus)]
    return pool[index % len(pool)]


def run_workers(config, count: int, gpus: int) -> list[int]:
    """Start `count` workers, wait for all of them, and return their exit codes. A worker that
    dies does not stop the others; its trial is failed by the study's heartbeat and retried.
    With `gpus` > 0 each worker sees one of them; otherwise they all see the parent's devices."""
    processes = []
    for index in range(count):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = worker_gpu(
                index, gpus, os.environ.get("CUDA_VISIBLE_DEVICES")
            )
        processes.append(subprocess.Popen(worker_argv(config, index), env=env))
    return [process.wait() for process in processes]
