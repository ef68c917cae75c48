"""The capwallet npm package (js/): its Node unit tests (node --test) and its TypeScript
declarations (tsc), run from pytest so that `make test` and CI run them.

The npm dependencies come from the lockfile (`npm ci` at the repository root, which .ci/run
does first); the test installs them the same way if they are missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} (Node.js 20+) is required: bash scripts/system-deps.sh"
    return path


def npm_installed() -> None:
    """node_modules from package-lock.json (npm ci), once."""
    if not (ROOT / "node_modules" / "openai").is_dir() or not (
            ROOT / "node_modules" / "typescript").is_dir():
        subprocess.run([_tool("npm"), "ci", "--no-audit", "--no-fund"], cwd=ROOT, check=True,
                       capture_output=True, timeout=600)


def node_tests(target: str, env: dict[str, str] | None = None) -> int:
    """Run Node's test runner on ``target`` from the repository root; every test must pass.
    Returns how many passed."""
    done = subprocess.run([_tool("node"), "--test", target], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    passed = re.search(r"^# pass (\d+)$", done.stdout, re.M)
    failed = re.search(r"^# fail (\d+)$", done.stdout, re.M)
    assert passed and failed and int(failed.group(1)) == 0, done.stdout[-2000:]
    return int(passed.group(1))


def test_node_unit_tests_pass() -> None:
    npm_installed()
    assert node_tests("js/test/") >= 10


def test_type_declarations_compile() -> None:
    npm_installed()
    tsc = ROOT / "node_modules" / ".bin" / "tsc"
    done = subprocess.run([str(tsc), "-p", "js"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_one_js_codebase() -> None:
    """The conformance adapter drives the package's token code; no second copy of it."""
    assert not (ROOT / "conformance" / "js" / "lib").exists()
    adapter = (ROOT / "conformance" / "js" / "adapter.js").read_text()
    assert "from '../../js/src/token/verify.js'" in adapter
    # mutants/ is make mutation's working copy of the tree (git-ignored), not a second codebase.
    copies = [p for p in ROOT.glob("**/macaroon.js")
              if "node_modules" not in p.parts and ".venv" not in p.parts
              and p.relative_to(ROOT).parts[0] != "mutants"]
    assert copies == [ROOT / "js" / "src" / "token" / "macaroon.js"]
