"""The mutation equivalents list names mutants that still exist and still change what was judged.

mutmut renumbers a function's mutants when the function changes, so a listed name can go stale
silently: name no mutant, or another one that the score would then count as equivalent
unjudged. scripts/mutation_equivalents.py generates the mutants as ``mutmut run`` does (no
test run) and compares; these tests run it on the real list and show it catching each kind of
staleness on a small module.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts import mutation_equivalents as eq

ROOT = Path(__file__).resolve().parent.parent


def test_mutmut_is_the_version_the_list_is_named_by() -> None:
    assert eq.mutmut_problem() is None


def test_every_listed_equivalent_is_the_mutant_it_was_judged_on() -> None:
    listing = ROOT / "scripts" / "mutation_equivalents.txt"
    judged = json.loads(listing.with_suffix(".diffs.json").read_text("utf-8"))
    found, stale = eq.check(listing, judged, ROOT / "src")
    assert not stale, (
        "stale entries in scripts/mutation_equivalents.txt (a listed function changed): "
        "re-judge each, fix its name or reason, then python scripts/mutation_equivalents.py "
        "--record\n" + "\n".join(f"{s.name}: {s.why}" for s in stale))
    assert set(found) == set(judged) == set(eq.listed(listing))


TOY = '''
def add(a, b):
    return a + b


class Box:
    def double(self, x):
        return x * 2
'''


def _run(tmp_path: Path, *names: str, record: bool = False) -> int:
    listing = tmp_path / "equivalents.txt"
    listing.write_text("# a comment line\n" + "".join(f"{n}  why\n" for n in names), "utf-8")
    return eq.main([*(["--record"] if record else []), "--list", str(listing),
                    "--src", str(tmp_path / "src")])


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "capwallet" / "toy.py"
    path.parent.mkdir(parents=True)
    path.write_text(TOY, "utf-8")
    return path


def test_entries_that_name_no_mutant_are_reported_and_never_recorded(
        tmp_path: Path, toy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    count = eq.Mutants(toy).count["x_add"]
    names = ["capwallet.toy.x_add__mutmut_1", "capwallet.toy.x_gone__mutmut_1",
             f"capwallet.toy.x_add__mutmut_{count + 1}", "capwallet.nofile.x_add__mutmut_1",
             "capwallet.toy.add_1"]
    assert _run(tmp_path, *names, record=True) == 1
    assert not (tmp_path / "equivalents.diffs.json").exists()
    err = capsys.readouterr().err
    assert "capwallet.toy.x_gone__mutmut_1: no function x_gone in capwallet.toy" in err
    assert (f"capwallet.toy.x_add__mutmut_{count + 1}: no mutant {count + 1}: "
            f"x_add has {count} mutants") in err
    assert "capwallet.nofile.x_add__mutmut_1: no source file src/capwallet/nofile.py" in err
    assert "'capwallet.toy.add_1' is not a mutmut 3 mutant name" in err
    assert "nothing recorded: 4 entries name no mutant" in err
    assert "capwallet.toy.x_add__mutmut_1:" not in err

    assert _run(tmp_path, *names) == 1
    out = capsys.readouterr().out
    assert "stale: capwallet.toy.x_add__mutmut_1: no change recorded for it" in out
    assert "equivalents.txt: 5 entries, 0 current, 5 stale" in out


def test_a_renumbered_mutant_is_reported_with_what_it_changes_now_and_then(
        tmp_path: Path, toy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = ["capwallet.toy.x_add__mutmut_1", "capwallet.toy.xǁBoxǁdouble__mutmut_1"]
    assert _run(tmp_path, *names, record=True) == 0
    judged = json.loads((tmp_path / "equivalents.diffs.json").read_text("utf-8"))
    assert judged["capwallet.toy.x_add__mutmut_1"] == ["- return a + b", "+ return a - b"]
    assert judged["capwallet.toy.xǁBoxǁdouble__mutmut_1"] == [
        "- return x * 2", "+ return x / 2"]
    assert _run(tmp_path, *names) == 0
    assert "equivalents.txt: 2 entries, 2 current, 0 stale" in capsys.readouterr().out

    # A statement before the judged line: mutmut numbers its mutants first.
    toy.write_text(TOY.replace("    return a + b", "    b = b - 1\n    return a + b"), "utf-8")
    assert _run(tmp_path, *names) == 1
    out = capsys.readouterr().out
    assert ("stale: capwallet.toy.x_add__mutmut_1: the mutant changes other code than when it "
            "was judged; now:\n    - b = b - 1\n    + b = None\n  judged:\n"
            "    - return a + b\n    + return a - b\n") in out
    assert "equivalents.txt: 2 entries, 1 current, 1 stale" in out

    toy.write_text(TOY.replace("def double", "def triple"), "utf-8")
    listing = tmp_path / "equivalents.txt"
    assert eq.main(["--json", "--list", str(listing), "--src", str(tmp_path / "src")]) == 1
    assert json.loads(capsys.readouterr().out) == [
        {"name": "capwallet.toy.xǁBoxǁdouble__mutmut_1",
         "why": "no function xǁBoxǁdouble in capwallet.toy"}]
