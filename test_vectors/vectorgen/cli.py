"""Build every file, check each vector against the implementation, write or --check."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import approval, attenuate, budget, encoding, mint, negative, verify
from .check import check_vector
from .files import FLAGS, File

OUT = Path(__file__).resolve().parent.parent / "v1"

# One builder per vector file, in the order the files are reported.
BUILDERS: list[Callable[[], File]] = [
    encoding.build_encoding, mint.build_mint, attenuate.build_attenuate, verify.build_verify,
    negative.build_negative, budget.build_budget, approval.build_approval,
]


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def build_all() -> dict[str, str]:
    FLAGS_SNAPSHOT = dict(FLAGS)
    files: dict[str, str] = {}
    for build in BUILDERS:
        f = build()
        for v in f.tests:
            check_vector(v)
        files[f.name + ".json"] = render(f.document())
    assert FLAGS == FLAGS_SNAPSHOT, "flags must be declared at module level"
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Generate the capwallet v1 conformance vectors in test_vectors/v1/ "
                    "(spec/test-vectors.md).")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if any file would change")
    args = parser.parse_args(argv)
    files = build_all()
    if args.check:
        stale = [name for name, text in files.items()
                 if not (OUT / name).exists() or (OUT / name).read_text("utf-8") != text]
        extra = sorted(p.name for p in OUT.glob("*.json") if p.name not in files)
        for name in stale:
            print(f"{name}: differs from what the generator produces", file=sys.stderr)
        for name in extra:
            print(f"{name}: not produced by the generator", file=sys.stderr)
        return 1 if stale or extra else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (OUT / name).write_text(text, "utf-8")
    total = sum(json.loads(t)["numberOfTests"] for t in files.values())
    print(f"wrote {len(files)} files, {total} vectors, to {OUT}")
    return 0
