"""Conformance: the Python and the JavaScript implementations through the adapter protocol.

Both implementations run every vector in test_vectors/v1 as separate processes, through
`capwallet conformance`'s runner (spec/conformance.md), and must pass all of them. The npm
`macaroon` package must import and verify every signed vector token (wire compatibility with
libmacaroons v2). Node.js and npm are required: without them these tests fail, they do not skip.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capwallet import conformance, macaroon
from capwallet.cli import main
from capwallet.identifier import Identifier
from capwallet.periods import period_end, period_key, zone_names
from capwallet.token import Token

REPO = Path(__file__).resolve().parent.parent
VECTORS = REPO / "test_vectors" / "v1"
WIRE = REPO / "conformance" / "js" / "wire-compat"
# The commands exactly as spec/implementations.md shows them; they run with the repository as
# the working directory and this interpreter's directory first on PATH.
PY_IMPL = "python -m capwallet.conformance_adapter"
JS_IMPL = "node conformance/js/adapter.js"


def _node() -> str:
    node = shutil.which("node")
    assert node is not None, "node (Node.js 20+) is required for the conformance tests"
    return node


@pytest.fixture(scope="module")
def impl_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Run adapters from the repository root with this interpreter as `python`."""
    _node()
    bin_dir = tmp_path_factory.mktemp("bin")
    python = bin_dir / "python"  # a wrapper, not a symlink, so a venv stays a venv
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n', "utf-8")
    python.chmod(0o755)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        mp.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        yield


@pytest.fixture(scope="module")
def vectors() -> dict[str, list[Any]]:
    return conformance.load_vectors(VECTORS)


@pytest.fixture(scope="module")
def python_report(impl_env: None, vectors: dict[str, list[Any]]) -> conformance.Report:
    return conformance.run(PY_IMPL, vectors)


@pytest.fixture(scope="module")
def js_report(impl_env: None, vectors: dict[str, list[Any]]) -> conformance.Report:
    return conformance.run(JS_IMPL, vectors)


def _assert_all_pass(report: conformance.Report, vectors: dict[str, list[Any]]) -> None:
    failures = [f"{r.id}: {f}" for r in report.results for f in r.failures]
    assert not failures, "\n".join(failures[:20])
    counts = report.counts()
    assert {g: c["passed"] for g, c in counts.items()} == {g: len(t) for g, t in vectors.items()}
    assert report.ok and len(report.results) >= 300


def test_python_implementation_passes_every_vector(
    python_report: conformance.Report, vectors: dict[str, list[Any]]
) -> None:
    assert python_report.implementation["name"] == "capwallet-python"
    _assert_all_pass(python_report, vectors)


def test_javascript_implementation_passes_every_vector(
    js_report: conformance.Report, vectors: dict[str, list[Any]]
) -> None:
    assert js_report.implementation["name"] == "capwallet-js"
    _assert_all_pass(js_report, vectors)


def test_every_check_kind_ran(js_report: conformance.Report) -> None:
    """The runner exercised every adapter operation, not only verify."""
    ran = {c for r in js_report.results for c in r.checks}
    assert ran == {"parse", "mint", "attenuate", "request_digest", "access_digest",
                   "issue_approval", "verify"}
    assert set(js_report.ops) >= ran


def test_implementation_matrix_matches_a_fresh_run(
    python_report: conformance.Report, js_report: conformance.Report
) -> None:
    generated = conformance.matrix_markdown([python_report, js_report], "test_vectors/v1")
    committed = (REPO / "spec" / "implementations.md").read_text("utf-8")
    assert committed == generated, (
        "spec/implementations.md is stale; regenerate it with: capwallet conformance "
        f"--impl '{PY_IMPL}' --impl '{JS_IMPL}' --matrix spec/implementations.md")


# --- edge cases not (yet) in the vectors: both implementations must agree ----------------

_KEY = {"key_id": "0c0ffee000000001", "root_key": "11" * 32}
_CALL = {"kind": "model_call", "provider": "openai", "model": "m", "operation": "chat",
         "scopes": [], "input_tokens": 10, "output_tokens": 10, "cost": {"EUR": 1},
         "zero_retention": False, "approval": None, "digest": None}
_EDGE_CASES = [
    # ICU has no "Factory", and matches names case-insensitively, and knows non-tzdb aliases.
    (b"budget b000000000000001 100 EUR day Factory", "invalid_caveat"),
    (b"budget b000000000000001 100 EUR day us/pacific", "invalid_caveat"),
    (b"budget b000000000000001 100 EUR day PST", "invalid_caveat"),
    (b"budget b000000000000001 100 EUR day SystemV/AST4", "invalid_caveat"),
    (b"budget b000000000000001 100 EUR day US/Pacific", None),  # a tzdb Link
    (b"budget b000000000000001 100 EUR day Asia/Kolkata", None),  # ICU calls it Asia/Calcutta
    # Registry lookups must not find object properties.
    (b"constructor 1", "unknown_caveat"),
    (b"__proto__ 1", "unknown_caveat"),
    (b"toString", "unknown_caveat"),
    # UTF-8 byte order, not UTF-16: U+FFFD < U+1F600.
    (b"models m %EF%BF%BD %F0%9F%98%80", None),
    (b"models m %F0%9F%98%80 %EF%BF%BD", "invalid_caveat"),
]


def _token(caveat: bytes) -> str:
    secret = bytes.fromhex(_KEY["root_key"])
    ident = Identifier(key_id=bytes.fromhex(_KEY["key_id"]), token_id=bytes(16),
                       issued_at=1_789_996_400)
    sig = macaroon.chain(secret, ident.encode(), [caveat])
    return Token(ident, macaroon.RawMacaroon(ident.encode(), (caveat,), sig)).serialize()


@pytest.mark.parametrize("command", [PY_IMPL, JS_IMPL], ids=["python", "javascript"])
def test_edge_cases_beyond_the_vectors(impl_env: None, command: str) -> None:
    with conformance.Adapter(command) as a:
        for caveat, reason in _EDGE_CASES:
            d = a.call("verify", keys=[_KEY], token=_token(caveat), now=1_790_000_000,
                       request=_CALL, counters={}, revoked=[])
            assert d["reason"] == reason, (caveat, d)
            assert d["allowed"] is (reason is None)


@pytest.mark.parametrize("command", [PY_IMPL, JS_IMPL], ids=["python", "javascript"])
def test_an_adapter_answers_every_line_in_the_far_future(impl_env: None, command: str) -> None:
    """Issue 13 'Year 10000': at now = 2^53-1 with a calendar budget the Python adapter died
    (datetime overflow) and answered nothing more. Now both answer period_out_of_range, then
    the next line; an op that fails answers an error instead of ending the process."""
    token = _token(b"budget b000000000000001 100 EUR day Europe/Paris")
    with conformance.Adapter(command) as a:
        for now in (2**53 - 1, 253402300800, 253339228800):
            d = a.call("verify", keys=[_KEY], token=token, now=now, request=_CALL,
                       counters={}, revoked=[])
            assert d["reason"] == "period_out_of_range", (now, d)
        d = a.call("verify", keys=[_KEY], token=token, now=1_790_000_000, request=_CALL,
                   counters={}, revoked=[])
        assert d["allowed"] is True
        with pytest.raises(conformance.AdapterError):
            a.call("mint", root_key="00", key_id="zz", token_id="", issued_at=-1, caveats=[])
        assert a.call("verify", keys=[_KEY], token=token, now=1_790_000_000, request=_CALL,
                      counters={}, revoked=[])["allowed"] is True


_PERIODS_JS = """
import { periodKey, periodEnd } from './js/src/token/periods.js';
let text = '';
for await (const chunk of process.stdin) text += chunk;
const out = JSON.parse(text).map(([p, t, tz]) => [periodKey(p, t, tz), periodEnd(p, t, tz)]);
process.stdout.write(JSON.stringify(out));
"""


def test_period_keys_and_ends_agree_in_every_time_zone(impl_env: None) -> None:
    """Beyond the vectors: Python (zoneinfo) and JavaScript (Intl) compute the same period
    key and period end in every tz database zone, at random minutes from 1995 to 2037 and
    around daylight-saving changes at midnight (seeded, so a failure reproduces)."""
    rng = random.Random(20260921)
    cases: list[tuple[str, int, str]] = []
    for tz in sorted(zone_names()):
        t = rng.randrange(788_918_400, 2_145_916_800) // 60 * 60
        cases += [(p, t, tz) for p in ("day", "week", "month", "year")]
    for tz in ("America/Santiago", "America/Havana", "Pacific/Apia", "America/Asuncion"):
        for _ in range(100):
            t = rng.randrange(1_104_537_600, 1_924_992_000) // 60 * 60
            cases.append(("day", t, tz))
    done = subprocess.run([_node(), "--input-type=module", "-e", _PERIODS_JS],
                          input=json.dumps(cases), capture_output=True, text=True,
                          timeout=120, check=True)
    js = [tuple(x) for x in json.loads(done.stdout)]
    py = [(period_key(p, t, tz), period_end(p, t, tz)) for p, t, tz in cases]
    wrong = [(c, a, b) for c, a, b in zip(cases, py, js, strict=True) if a != b]
    assert not wrong, wrong[:5]


# --- the command line ------------------------------------------------------------------------


def test_cli_filters_groups_and_prints_json(
    impl_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["conformance", "--impl", JS_IMPL, "--group", "verify", "--group", "budget",
                 "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(out["summary"]["groups"]) == {"verify", "budget"}
    assert out["summary"]["failed"] == 0
    assert out["summary"]["total"] == out["summary"]["passed"] == len(out["vectors"]) >= 80
    assert out["protocol"] == 1 and out["implementation"]["name"] == "capwallet-js"


def test_cli_prints_pass_per_vector_and_a_summary(
    impl_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["conformance", "--impl", PY_IMPL, "--group", "mint"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "PASS mint-001" in lines
    assert lines[-1] == f"{sum(1 for x in lines if x.startswith('PASS '))} passed, 0 failed"


_WRONG_IMPL = '''
import json, sys
for line in sys.stdin:
    req = json.loads(line)
    if req["op"] == "hello":
        res = {"protocol": 1, "implementation": {"name": "always-allow"}, "ops": ["verify"]}
    else:
        res = {"allowed": True, "reason": None, "debits": [], "approval_id": None}
    print(json.dumps({"id": req["id"], "result": res}), flush=True)
'''


def test_cli_fails_an_implementation_that_allows_everything(
    impl_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "always_allow.py"
    script.write_text(_WRONG_IMPL, "utf-8")
    assert main(["conformance", "--impl", f"python {script}", "--group", "encoding"]) == 1
    out = capsys.readouterr().out
    assert "FAIL encoding-016" in out  # trailing bytes: must be malformed
    assert "does not support op 'parse'" in out
    assert "PASS encoding-001" not in out  # parse is unsupported, so no vector fully passes
    total = json.loads((REPO / "test_vectors/v1/encoding.json").read_text("utf-8"))["numberOfTests"]
    assert out.rstrip().endswith(f"0 passed, {total} failed")


_NO_COUNTER_IMPL = '''
import json, sys
from capwallet.conformance_adapter import handle
for line in sys.stdin:
    res = handle(line)
    if "allowed" in res.get("result", {}):
        res["result"]["counter"] = None
    print(json.dumps(res), flush=True)
'''


def test_runner_fails_an_implementation_that_names_no_counter(
    impl_env: None, tmp_path: Path, vectors: dict[str, list[Any]],
) -> None:
    """The Python implementation with every decision's counter blanked fails exactly the
    vectors whose expected result names a counter (spec/verification.md#decision)."""
    script = tmp_path / "no_counter.py"
    script.write_text(_NO_COUNTER_IMPL, "utf-8")
    groups = {g: vectors[g] for g in ("verify", "budget", "attenuate", "approval")}
    report = conformance.run(f"python {script}", groups)
    failed = {r.id for r in report.results if not r.passed}

    def names_a_counter(v: dict[str, Any]) -> bool:
        expected = [s["expected"] for s in v["steps"]] if "steps" in v else [v["expected"]]
        return any("counter" in e for e in expected)

    expected = {v["id"] for tests in groups.values() for v in tests if names_a_counter(v)}
    assert len(expected) >= 20
    assert failed == expected
    assert all("counter: expected {" in f for r in report.results for f in r.failures)


@pytest.mark.parametrize("command", ["cat", "no-such-adapter-command-xyz"])
def test_cli_rejects_a_command_that_does_not_speak_the_protocol(
    impl_env: None, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["conformance", "--impl", command, "--group", "mint"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"capwallet: implementation '{command}'")


@pytest.mark.parametrize("command", [PY_IMPL, JS_IMPL], ids=["python", "javascript"])
def test_adapters_answer_bad_requests_with_errors(impl_env: None, command: str) -> None:
    lines = [
        '{"id": 1, "op": "hello", "protocol": 2}',
        '{"id": 2, "op": "frobnicate"}',
        "not json",
        '{"id": 4, "op": "verify", "token": 5}',
        '{"id": 5, "op": "parse", "token": "cwt1_"}',
    ]
    argv = command.split()
    done = subprocess.run(argv, input="\n".join(lines) + "\n", capture_output=True, text=True,
                          timeout=60, check=True)
    out = [json.loads(x) for x in done.stdout.splitlines()]
    assert [o["id"] for o in out] == [1, 2, None, 4, 5]
    assert all("error" in o for o in out[:4])
    assert out[4]["result"] == {**out[4]["result"], "ok": False, "reason": "malformed"}


# --- wire compatibility with libmacaroons v2 (npm macaroon 3.x) ------------------------------


def test_every_signed_token_verifies_with_npm_macaroon() -> None:
    node = _node()
    if not (WIRE / "node_modules" / "macaroon").is_dir():
        npm = shutil.which("npm")
        assert npm is not None, "npm is required to install conformance/js/wire-compat"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=WIRE, check=True,
                       capture_output=True, timeout=300)
    done = subprocess.run([node, "check.js", str(VECTORS)], cwd=WIRE, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.splitlines()
    assert summary[-1].endswith(" passed, 0 failed")
    verified = int(summary[-2].split(": ", 1)[1].split(" signed tokens")[0])
    assert verified >= 150
