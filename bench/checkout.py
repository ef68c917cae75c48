"""Benchmarks measure the checkout they live in.

A venv's editable install can point at another clone of this repository (a CI copy, a second
worktree), and the relays a benchmark starts run in temporary directories, where a relative
``PYTHONPATH`` resolves to nothing: without this module a run from one checkout can time
another checkout's code and print the figures as its own (seen: ``PYTHONPATH=src:.`` from a
worktree, with the venv of a CI clone, timed the CI clone's relay). Importing it puts this
checkout's ``src/`` and root first on ``sys.path``; ``env()`` gives the processes a benchmark
starts the same two paths, absolute; ``describe()`` names the tree and commit a run measured,
for the header a run prints.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATHS = (str(ROOT / "src"), str(ROOT))

for _path in reversed(PATHS):
    if _path in sys.path:
        sys.path.remove(_path)
    sys.path.insert(0, _path)


def env(**extra: str) -> dict[str, str]:
    """This process's environment for a child process, with this checkout first on its
    ``PYTHONPATH`` (absolute, so it holds in any working directory) and ``extra`` set."""
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in PATHS]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*PATHS, *rest]), **extra}


def describe(root: Path = ROOT) -> str:
    """``<root> at <commit>`` (``, with uncommitted changes`` when the tree differs from it)."""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return f"{root} (not a git checkout)"
    changed = ", with uncommitted changes" if dirty.stdout.strip() else ""
    return f"{root} at {commit.stdout.strip()}{changed}"
