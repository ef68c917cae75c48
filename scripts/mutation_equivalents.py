"""Check that every mutant listed in scripts/mutation_equivalents.txt is still the one judged.

mutmut names a mutant by its function and a number counted within that function
(``capwallet.verify.x_evaluate__mutmut_41``). When the function changes, mutmut renumbers
its mutants, and a listed name goes stale without a word: it may name no mutant at all, or
name another one, which the score would then count as equivalent unjudged. This script
generates the mutants the way ``mutmut run`` does (mutmut's own generator, no test run: a few
seconds) and reports each listed entry whose

- source file or function no longer exists,
- mutant number is past the function's mutant count, or
- mutant now changes other code than when it was judged: the change each entry was judged on
  is kept in scripts/mutation_equivalents.diffs.json (the mutant's removed and added lines).

After re-judging the entries it reports (``mutmut show NAME`` after a run, or the lines this
script prints), fix their names or reasons in mutation_equivalents.txt and run it with
``--record`` to keep the changes they are judged on now. Exit status: 0 all current, 1 some
stale, 2 it cannot check (mutmut missing or another version: names differ between versions).
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

MUTMUT_VERSION = "3.8.1"  # the version make mutation installs; mutant names differ between versions
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass(frozen=True)
class Stale:
    """A listed entry that no longer names the mutant it was judged on, and why."""

    name: str
    why: str


def listed(path: Path) -> dict[str, str]:
    """Listed mutant name -> its reason (scripts/mutation_score.py reads the list with it)."""
    names: dict[str, str] = {}
    for line in path.read_text("utf-8").splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        name, _, reason = line.strip().partition(" ")
        names[name] = reason.strip()
    return names


def split_name(name: str) -> tuple[str, str, int]:
    """``capwallet.verify.x_evaluate__mutmut_41`` -> ("capwallet.verify", "x_evaluate", 41)."""
    module, _, mutant = name.rpartition(".")
    function, sep, number = mutant.rpartition("__mutmut_")
    if not module or not sep or not number.isdigit() or not function.startswith(("x_", "xǁ")):
        raise ValueError(f"{name!r} is not a mutmut 3 mutant name (module.x_function__mutmut_N)")
    return module, function, int(number)


class Mutants:
    """The mutants mutmut generates for one source file: per function, each mutant's change."""

    def __init__(self, path: Path) -> None:
        from mutmut.mutation.file_mutation import compute_function_hashes, mutate_file_contents

        source = path.read_text("utf-8")
        self.functions = set(compute_function_hashes(source))  # every function, mutated or not
        mutated = mutate_file_contents(str(path), source)
        lines = mutated.code.splitlines()
        spans = mutated.line_span_by_function_name

        def text(name: str) -> list[str]:
            span = spans[name]
            return lines[span.start:span.end]

        self.count: dict[str, int] = {}
        self.changes: dict[str, list[str]] = {}
        for mutant in mutated.mutant_names:
            function, _, number = mutant.rpartition("__mutmut_")
            self.count[function] = max(self.count.get(function, 0), int(number))
            orig = [line.replace(f"{function}__mutmut_orig", "F") for line in
                    text(f"{function}__mutmut_orig")]
            new = [line.replace(mutant, "F") for line in text(mutant)]
            self.changes[mutant] = [
                line[0] + " " + line[1:].strip()
                for line in difflib.unified_diff(orig, new, n=0, lineterm="")
                if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def mutmut_problem() -> str | None:
    """Why the check cannot run here, or None."""
    try:
        version = metadata.version("mutmut")
    except metadata.PackageNotFoundError:
        return f"mutmut is not installed: pip install 'mutmut=={MUTMUT_VERSION}'"
    if version != MUTMUT_VERSION:
        return (f"mutmut {version} is installed, the list is named by mutmut {MUTMUT_VERSION}: "
                f"pip install 'mutmut=={MUTMUT_VERSION}'")
    return None


def changes(names: list[str], src: Path) -> tuple[dict[str, list[str]], list[Stale]]:
    """The current change of every listed mutant that exists, and the entries that do not."""
    files: dict[str, Mutants | None] = {}
    found: dict[str, list[str]] = {}
    stale: list[Stale] = []
    for name in names:
        try:
            module, function, number = split_name(name)
        except ValueError as exc:
            stale.append(Stale(name, str(exc)))
            continue
        path = src.joinpath(*module.split(".")).with_suffix(".py")
        if module not in files:
            files[module] = Mutants(path) if path.is_file() else None
        mutants = files[module]
        mutant = name.rpartition(".")[2]
        if mutants is None:
            stale.append(Stale(name, f"no source file {path.relative_to(src.parent)}"))
        elif function not in mutants.functions:
            stale.append(Stale(name, f"no function {function} in {module}"))
        elif mutant not in mutants.changes:
            stale.append(Stale(name, f"no mutant {number}: {function} has "
                                     f"{mutants.count.get(function, 0)} mutants"))
        else:
            found[name] = mutants.changes[mutant]
    return found, stale


def check(listing: Path, judged: Mapping[str, list[str]],
          src: Path) -> tuple[dict[str, list[str]], list[Stale]]:
    """(current change of each listed mutant that exists, stale entries in listing order)."""
    names = list(listed(listing))
    found, stale = changes(names, src)
    for name, change in found.items():
        was = judged.get(name)
        if was is None:
            stale.append(Stale(name, "no change recorded for it (judge it, then --record):\n"
                                     + _indent(change)))
        elif was != change:
            stale.append(Stale(name, "the mutant changes other code than when it was judged; "
                                     "now:\n" + _indent(change) + "\n  judged:\n" + _indent(was)))
    order = {name: i for i, name in enumerate(names)}
    stale.sort(key=lambda s: order.get(s.name, len(order)))
    return found, stale


def _indent(lines: list[str]) -> str:
    return "\n".join("    " + line for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Report entries of the mutation equivalents list whose function or mutant "
                    "no longer exists, or whose mutant changes other code than when judged.")
    parser.add_argument("--record", action="store_true",
                        help="after re-judging: keep each listed mutant's current change as "
                             "the one it is judged on (entries that name no mutant are refused)")
    parser.add_argument("--json", action="store_true", help="print the stale entries as JSON")
    parser.add_argument("--list", type=Path, default=HERE / "mutation_equivalents.txt",
                        help="the equivalents list (default: %(default)s)")
    parser.add_argument("--judged", type=Path, default=None,
                        help="the changes entries were judged on (default: the list's name "
                             "with .diffs.json)")
    parser.add_argument("--src", type=Path, default=ROOT / "src",
                        help="where the listed modules' sources are (default: %(default)s)")
    args = parser.parse_args(argv)
    judged_path: Path = args.judged or args.list.with_suffix(".diffs.json")
    problem = mutmut_problem()
    if problem:
        print(f"cannot check {args.list.name}: {problem}", file=sys.stderr)
        return 2
    judged: dict[str, list[str]] = (json.loads(judged_path.read_text("utf-8"))
                              if judged_path.exists() else {})
    found, stale = check(args.list, judged, args.src)
    if args.record:
        missing = [s for s in stale if s.name not in found]
        for s in missing:
            print(f"{s.name}: {s.why}", file=sys.stderr)
        if missing:
            print(f"nothing recorded: {len(missing)} entries name no mutant; fix or drop them",
                  file=sys.stderr)
            return 1
        judged_path.write_text(json.dumps(found, indent=1, ensure_ascii=False, sort_keys=True)
                               + "\n", "utf-8")
        print(f"recorded the changes of {len(found)} listed mutants in {judged_path.name}")
        return 0
    if args.json:
        print(json.dumps([{"name": s.name, "why": s.why} for s in stale], indent=1,
                         ensure_ascii=False))
    else:
        total = len(listed(args.list))
        for s in stale:
            print(f"stale: {s.name}: {s.why}")
        print(f"{args.list.name}: {total} entries, {total - len(stale)} current, "
              f"{len(stale)} stale" + (" (re-judge them, fix the list, then --record)"
                                       if stale else ""))
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
