"""Print the mutation score per protocol-core file from mutmut's results (make mutation).

mutmut 3 records, per source file, the exit code of the test run for each mutant in
``mutants/<path>.meta``. Killed: the tests failed (1, 3, or a crash such as MemoryError under
the run's memory limit); timeout: the mutant's worker ran out of its time limit (a loop), which
counts as killed; survived: the tests passed (0); no tests: no selected test reaches the
mutant. The raw score is (killed + timeout) / (killed + timeout + survived + no tests), the
number the issue tracker's figures use.

Survivors judged harmless are listed by name in ``scripts/mutation_equivalents.txt`` with why:
equivalent (behaviour unchanged, e.g. a check that a later check repeats) or, when the reason
starts with "message only", a mutant that changes only the wording of an error whose reason
code a test does check. Both are reported apart and left out of the adjusted score; a listed
mutant that a test kills counts as killed.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutation_equivalents import listed  # run as a script: scripts/ is on sys.path

KILLED = {1, 3, 37, -11, -6, 134, 139}
TIMEOUT = {36, -24, 24, 152, 255, -9}  # -9: the hard CPU limit (SIGKILL)
SURVIVED = {0}
NO_TESTS = {5, 33}
MESSAGE_ONLY = "message only"


def main(root: str = "mutants") -> int:
    metas = sorted(Path(root).rglob("*.py.meta"))
    if not metas:
        print(f"no mutmut results under {root}/ (run make mutation first)", file=sys.stderr)
        return 2
    listing = Path(__file__).with_name("mutation_equivalents.txt")
    known = listed(listing) if listing.exists() else {}
    print(f"{'file':<24}{'mutants':>8}{'killed':>7}{'timeout':>8}{'survived':>9}{'no test':>8}"
          f"{'equiv':>6}{'msg':>5}{'score':>8}{'adjusted':>9}")
    survivors: list[str] = []
    for meta in metas:
        codes: dict[str, int | None] = json.loads(meta.read_text("utf-8"))["exit_code_by_key"]
        if not codes:
            continue
        n: Counter[str] = Counter()
        for name, code in codes.items():
            if code in KILLED:
                n["killed"] += 1
            elif code in TIMEOUT:
                n["timeout"] += 1
            elif code in SURVIVED:
                if name not in known:
                    n["survived"] += 1
                    survivors.append(name)
                elif known[name].startswith(MESSAGE_ONLY):
                    n["msg"] += 1
                else:
                    n["equiv"] += 1
            elif code in NO_TESTS:
                n["no tests"] += 1
                survivors.append(name + " (no test)")
            else:
                n["unchecked"] += 1
        caught = n["killed"] + n["timeout"]
        judged = caught + n["survived"] + n["equiv"] + n["msg"] + n["no tests"]
        if not judged:
            continue
        score = 100 * caught / judged
        adjusted = 100 * caught / max(judged - n["equiv"] - n["msg"], 1)
        name = str(meta.relative_to(root)).removesuffix(".meta").removeprefix("src/capwallet/")
        print(f"{name:<24}{judged:>8}{n['killed']:>7}{n['timeout']:>8}{n['survived']:>9}"
              f"{n['no tests']:>8}{n['equiv']:>6}{n['msg']:>5}{score:>7.1f}%{adjusted:>8.1f}%"
              + (f"  ({n['unchecked']} not run)" if n["unchecked"] else ""))
    if survivors:
        print("\nsurvivors not listed in scripts/mutation_equivalents.txt (mutmut show NAME):")
        for s in survivors:
            print("  " + s)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
