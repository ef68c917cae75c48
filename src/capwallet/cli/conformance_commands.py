"""conformance: run the v1 test vectors against implementations (spec/conformance.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from capwallet import conformance
from capwallet.cli.common import CliError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "conformance",
        help="run the test vectors against an implementation (exit 0 only if all pass)",
        description="Run every v1 test vector against each implementation given with --impl. "
        "An implementation is a command speaking the JSON-lines adapter protocol of "
        "spec/conformance.md on standard input and output, for example "
        "'python -m capwallet.conformance_adapter' or 'node conformance/js/adapter.js'.",
    )
    p.add_argument("--impl", action="append", required=True, metavar="COMMAND",
                   help="the implementation's adapter command (repeat to compare several)")
    p.add_argument("--group", action="append", choices=conformance.GROUPS, metavar="GROUP",
                   help="run only this vector group (repeat); one of "
                   + ", ".join(conformance.GROUPS))
    p.add_argument("--vectors", type=Path, metavar="DIR",
                   help="directory of the vector files (default: test_vectors/v1)")
    p.add_argument("--timeout", type=float, default=conformance.DEFAULT_TIMEOUT, metavar="SECONDS",
                   help="how long to wait for each answer")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--matrix", type=Path, metavar="FILE",
                   help="also write the implementation matrix (Markdown) to FILE")
    p.set_defaults(func=cmd_conformance)


def cmd_conformance(args: argparse.Namespace) -> int:
    directory: Path = args.vectors or conformance.default_vectors_dir()
    try:
        vectors = conformance.load_vectors(directory, args.group or conformance.GROUPS)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    reports = []
    for command in args.impl:
        try:
            reports.append(conformance.run(command, vectors, args.timeout))
        except (ValueError, conformance.AdapterError) as exc:
            raise CliError(f"implementation {command!r}: {exc}") from None
    if args.json:
        out: Any = reports[0].to_json() if len(reports) == 1 else [r.to_json() for r in reports]
        print(json.dumps(out, indent=2))
    else:
        print("\n\n".join(r.text() for r in reports))
    if args.matrix is not None:
        shown = _display_path(directory)
        args.matrix.write_text(conformance.matrix_markdown(reports, shown), "utf-8")
    return 0 if all(r.ok for r in reports) else 1


def _display_path(directory: Path) -> str:
    """The vectors directory as the matrix names it: relative to the current directory."""
    try:
        return directory.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return directory.as_posix()
