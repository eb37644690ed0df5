"""bench/search_speed.py on the tiny folder: its quick mode runs both arms twice and writes each
arm's median and spread and the speed-up's, and the naive anchor prefetches as the documents do.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time

from conftest import KERAS_HOME, REPO

SEARCH_SPEED = REPO / "bench" / "search_speed.py"


def test_the_naive_anchor_prefetches_as_the_documents_do(tiny_folder):
    spec = importlib.util.spec_from_file_location("search_speed", SEARCH_SPEED)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    dataset = bench.documents_dataset(tiny_folder / "train", 32, shuffle=True)
    assert type(dataset).__name__ == "_PrefetchDataset"


def test_quick_mode_runs_both_arms_twice_and_writes_their_spread(
    tiny_folder, weights_file, tmp_path
):
    out = tmp_path / "out"
    # One trial per search, and without the memory part (a third search process of its own):
    # the quick mode as it is takes about two minutes here.
    command = [sys.executable, str(SEARCH_SPEED), "--quick", "--trials", "1", "--rss-trials", "0"]
    command += ["--data", str(tiny_folder), "--out", str(out)]
    started = time.perf_counter()
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"KERAS_HOME": str(KERAS_HOME)},
    )
    print(f"search_speed.py --quick on the tiny folder: {time.perf_counter() - started:.0f}s")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "search_speed.json").read_text(encoding="utf-8"))
    summary = results["summary"]
    assert len(results["naive"]) == len(results["ours"]) == 2
    assert (summary["naive_runs"], summary["ours_runs"]) == (2, 2)
    for arm in ("naive", "ours"):
        low, high = summary[f"{arm}_trials_per_hour_range"]
        rates = [run["trials_per_hour"] for run in results[arm]]
        assert (low, high) == (min(rates), max(rates))
        assert low <= summary[f"{arm}_trials_per_hour"] <= high
    low, high = summary["speedup_range"]
    assert low <= summary["speedup"] <= high
    assert "prefetch" in results["budget"]["naive_input"]
    table = (out / "README.md").read_text(encoding="utf-8")
    assert f"**{summary['speedup']}x** ({low}\u2013{high}x)" in table
    naive_rate, naive_range = (
        summary["naive_trials_per_hour"],
        summary["naive_trials_per_hour_range"],
    )
    assert f"| {naive_rate} ({naive_range[0]}\u2013{naive_range[1]}) |" in table
    assert "the naive anchor (image_dataset_from_directory with prefetch) 2x" in table
    assert "| RSS, MiB | | not run (--rss-trials 0) |" in table
