"""Print the mutation score per protocol-core file from mutmut's results (make mutation).

mutmut 3 records, per source file, the exit code of the test run for each mutant in
``mutants/<path>.meta``. Killed: the tests failed (1, 3) or timed out; survived: they passed
(0); no tests: no selected test reaches the mutant. The score is killed / (killed + survived
+ no tests), the number the issue tracker's figures use.

Survivors that are equivalent (behaviour unchanged, e.g. a message-only change or a check that
a later check repeats) are listed by name in ``scripts/mutation_equivalents.txt`` with why;
they are reported apart and left out of the adjusted score.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

KILLED = {1, 3, 36, -24, 24, 152, 255, -11, -9, 37}
SURVIVED = {0}
NO_TESTS = {5, 33}


def equivalents(path: Path) -> set[str]:
    if not path.exists():
        return set()
    names = set()
    for line in path.read_text("utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(line.split()[0])
    return names


def main(root: str = "mutants") -> int:
    metas = sorted(Path(root).rglob("*.py.meta"))
    if not metas:
        print(f"no mutmut results under {root}/ (run make mutation first)", file=sys.stderr)
        return 2
    equiv = equivalents(Path(__file__).with_name("mutation_equivalents.txt"))
    print(f"{'file':<28}{'mutants':>8}{'killed':>8}{'survived':>9}{'no test':>8}"
          f"{'equiv':>6}{'score':>8}{'adjusted':>9}")
    survivors: list[str] = []
    for meta in metas:
        codes: dict[str, int | None] = json.loads(meta.read_text("utf-8"))["exit_code_by_key"]
        if not codes:
            continue
        n = Counter()
        for name, code in codes.items():
            if code in KILLED:
                n["killed"] += 1
            elif code in SURVIVED:
                if name in equiv:
                    n["equiv"] += 1
                else:
                    n["survived"] += 1
                    survivors.append(name)
            elif code in NO_TESTS:
                n["no tests"] += 1
                survivors.append(name + " (no test)")
            else:
                n["unchecked"] += 1
        judged = n["killed"] + n["survived"] + n["equiv"] + n["no tests"]
        if not judged:
            continue
        score = 100 * n["killed"] / judged
        adjusted = 100 * n["killed"] / max(judged - n["equiv"], 1)
        name = str(meta.relative_to(root)).removesuffix(".meta").removeprefix("src/")
        print(f"{name:<28}{judged:>8}{n['killed']:>8}{n['survived']:>9}{n['no tests']:>8}"
              f"{n['equiv']:>6}{score:>7.1f}%{adjusted:>8.1f}%"
              + (f"  ({n['unchecked']} not run)" if n["unchecked"] else ""))
    if survivors:
        print("\nsurvivors not listed as equivalent (mutmut show NAME):")
        for s in survivors:
            print("  " + s)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
