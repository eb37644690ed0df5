"""What the benchmark scripts share: the processor a figure was measured on, and the block of a
README (bench/README.md, or a --quick run's own) that each script rewrites with its table."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The processor's model name from /proc/cpuinfo, else what Python knows of it."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def write_block(readme: Path, name: str, text: str, *, title: str | None = None) -> None:
    """Put `text` between the README's `<!-- NAME:begin -->` and `<!-- NAME:end -->` markers,
    replacing what was between them. Where the markers are not there yet, they are appended,
    under `title` if one is given. The rest of the README is kept as it is."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{text}\n{end}"
    current = readme.read_text(encoding="utf-8") if readme.exists() else ""
    if begin in current:
        head, rest = current.split(begin, 1)
        current = head + block + rest.split(end, 1)[1]
    else:
        before = current.rstrip("\n") + "\n\n" if current.strip() else ""
        current = before + (f"{title}\n\n" if title else "") + block + "\n"
    readme.parent.mkdir(parents=True, exist_ok=True)
    readme.write_text(current, encoding="utf-8")
