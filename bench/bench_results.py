"""Raw benchmark results as JSON next to the tables in ``docs/``.

Every benchmark takes ``--json-out PATH`` (default ``docs/bench/<name>.json``) and writes one
record: the command line, the arguments, the commit and whether the tree was dirty, the machine
(CPU count, platform, torch/numpy versions) and the raw result. A table in ``docs/`` names the
JSON file it was made from, so each figure can be traced to the run that produced it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS_BENCH = ROOT / "docs" / "bench"


def add_json_out(parser: argparse.ArgumentParser, name: str) -> None:
    """Add ``--json-out`` (default: ``docs/bench/<name>.json``, chosen by
    :func:`write_results`) to a benchmark's parser."""
    parser.add_argument("--json-out", type=Path, default=None,
                        help=f"where to write the raw results (default docs/bench/{name}.json)")


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version()}
    for module in ("numpy", "torch", "pyarrow"):
        if module in sys.modules:
            info[module] = getattr(sys.modules[module], "__version__", "")
    return info


def write_results(name: str, args: argparse.Namespace | dict[str, Any], result: Any,
                  path: Path | None = None) -> Path:
    """Write one benchmark record; returns the path written."""
    arguments = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    path = Path(path or arguments.get("json_out") or DOCS_BENCH / f"{name}.json")
    record = {
        "benchmark": name,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "arguments": arguments,
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "result": result,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path
