#!/usr/bin/env bash
# Does `pip install -e .` keep a TensorFlow already installed inside the supported range?
# For each TensorFlow below, in a fresh virtual environment: install it, then ask pip what
# `pip install -e .` would do (--dry-run --report) and record the versions it would leave.
# Writes bench/results/install_range.json. Needs the package index; takes minutes per version.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/results/install_range.json
VERSIONS=("${@:-2.16.2}")
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
results=()
for version in "${VERSIONS[@]}"; do
  python -m venv "$work/venv-$version"
  pip="$work/venv-$version/bin/pip"
  "$pip" install --quiet --disable-pip-version-check "tensorflow==$version" 2>/dev/null
  "$pip" install --quiet --disable-pip-version-check --dry-run --report "$work/report-$version.json" -e . 2>/dev/null
  results+=("$version=$work/report-$version.json")
done
python - "$OUT" "${results[@]}" <<'PY'
import json, platform, sys
from datetime import datetime, timezone
out, entries = sys.argv[1], sys.argv[2:]
rows = []
for entry in entries:
    version, path = entry.split("=", 1)
    report = json.load(open(path))
    changes = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in report["install"]}
    rows.append({
        "tensorflow_installed": version,
        "tensorflow_after_install": changes.get("tensorflow", version),
        "kept": "tensorflow" not in changes,
        "would_install": dict(sorted(changes.items())),
    })
result = {
    "what": "pip install -e . (dry run) into a venv that already holds the TensorFlow named",
    "python": platform.python_version(),
    "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    "runs": rows,
}
json.dump(result, open(out, "w"), indent=2)
print(json.dumps([{k: r[k] for k in ("tensorflow_installed", "tensorflow_after_install", "kept")} for r in rows]))
PY
