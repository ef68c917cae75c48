"""Run the v1 test vectors against any implementation through the adapter protocol.

An implementation is a command that speaks the conformance adapter protocol
(spec/conformance.md): one JSON request per line on its standard input, one JSON response per
line on its standard output. The runner starts it, says hello, and checks every vector: the
decoded parts of its token, minting, attenuation, request digests, approvals, and the
verification decision (with counters carried from step to step in budget sequences). A vector
passes only if every check it states passes. The runner judges; the adapter only answers.
"""

from __future__ import annotations

import json
import queue
import shlex
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

PROTOCOL = 1
GROUPS = ("encoding", "mint", "attenuate", "verify", "negative", "budget", "approval")
PARSE_REASONS = ("malformed", "unsupported_version")
DEFAULT_TIMEOUT = 30.0


class AdapterError(Exception):
    """The implementation did not answer a request as the protocol says."""


class AdapterFailed(AdapterError):
    """The implementation's process cannot be used any more (exited, hung, garbled output)."""


class Adapter:
    """One implementation process, started lazily and restarted after it fails."""

    def __init__(self, command: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.command = command
        self.argv = shlex.split(command)
        if not self.argv:
            raise ValueError("empty implementation command")
        self.timeout = timeout
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._next_id = 0
        self.hello: dict[str, Any] = {}

    def __enter__(self) -> Adapter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> dict[str, Any]:
        """Start the process and say hello; returns the hello result."""
        self.close()
        try:
            # The command is the operator's own --impl argument: running it is the point.
            proc = subprocess.Popen(  # noqa: S603
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, encoding="utf-8", bufsize=1,
            )
        except OSError as exc:
            raise AdapterFailed(f"cannot start {self.command!r}: {exc}") from exc
        self._proc = proc
        self._lines = queue.Queue()
        self._stderr = []
        assert proc.stdout is not None and proc.stderr is not None
        _pump(proc.stdout, self._lines.put)
        _pump(proc.stderr, self._keep_stderr)
        try:
            hello = self._call({"op": "hello", "protocol": PROTOCOL})
            if hello.get("protocol") != PROTOCOL or not isinstance(hello.get("ops"), list):
                raise AdapterFailed(f"implementation does not speak adapter protocol {PROTOCOL}")
        except AdapterError:
            self.close()
            raise
        self.hello = hello
        return hello

    @property
    def ops(self) -> list[str]:
        return list(self.hello.get("ops", []))

    @property
    def name(self) -> str:
        impl = self.hello.get("implementation") or {}
        return f"{impl.get('name', self.command)} {impl.get('version', '')}".strip()

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request; its result, or AdapterError."""
        if self._proc is None or self._proc.poll() is not None:
            self.start()
        if op not in self.ops:
            raise AdapterError(f"the implementation does not support op {op!r}")
        return self._call({"op": op, **fields})

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        self._next_id += 1
        rid = self._next_id
        try:
            proc.stdin.write(json.dumps({"id": rid, **request}) + "\n")
            proc.stdin.flush()
        except OSError as exc:
            raise self._failed(f"cannot write to the implementation: {exc}") from exc
        try:
            line = self._lines.get(timeout=self.timeout)
        except queue.Empty:
            raise self._failed(f"no answer within {self.timeout:g} s") from None
        if line is None:
            raise self._failed("the implementation exited")
        try:
            response = json.loads(line)
        except ValueError:
            raise self._failed(f"answer is not JSON: {line[:200]!r}") from None
        if not isinstance(response, dict) or response.get("id") != rid:
            raise self._failed(f"answer does not carry request id {rid}: {line[:200]!r}")
        if "error" in response:
            error = response["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise AdapterError(f"{request['op']}: implementation error: {message}")
        result = response.get("result")
        if not isinstance(result, dict):
            raise AdapterError(f"{request['op']}: answer has no result object")
        return result

    def _keep_stderr(self, line: str | None) -> None:
        if line is not None:
            self._stderr = [*self._stderr[-19:], line.rstrip("\n")]

    def _failed(self, message: str) -> AdapterFailed:
        tail = " | ".join(self._stderr[-5:])
        self.close()
        return AdapterFailed(message + (f" (stderr: {tail})" if tail else ""))

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pump(stream: IO[str], sink: Callable[[str | None], None]) -> None:
    """Forward a pipe's lines to ``sink`` from a daemon thread; None marks the end."""
    def run() -> None:
        for line in stream:
            sink(line)
        sink(None)

    threading.Thread(target=run, daemon=True).start()


# --- vectors --------------------------------------------------------------------------------


def default_vectors_dir() -> Path:
    """test_vectors/v1 under the current directory, else beside the source tree."""
    here = Path.cwd() / "test_vectors" / "v1"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "test_vectors" / "v1"


def load_vectors(directory: Path, groups: Iterable[str] = GROUPS) -> dict[str, list[Any]]:
    """Each group's vectors, in file order. Raises ValueError for a missing or foreign file."""
    out: dict[str, list[Any]] = {}
    for group in groups:
        if group not in GROUPS:
            raise ValueError(f"unknown vector group {group!r} (groups: {', '.join(GROUPS)})")
        path = directory / f"{group}.json"
        try:
            doc = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read {path}: {exc}") from exc
        if doc.get("version") != 1 or not isinstance(doc.get("tests"), list):
            raise ValueError(f"{path} is not a v1 vector file")
        out[group] = doc["tests"]
    return out


# --- checks ---------------------------------------------------------------------------------


@dataclass
class VectorResult:
    id: str
    group: str
    failures: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "group": self.group, "passed": self.passed,
                "checks": self.checks, "failures": self.failures}


class _Mismatch(Exception):
    pass


def _expect(what: str, want: Any, got: Any) -> None:
    if want != got:
        raise _Mismatch(f"{what}: expected {_short(want)}, got {_short(got)}")


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 300 else text[:297] + "..."


def _check_parse(a: Adapter, v: dict[str, Any]) -> None:
    got = a.call("parse", token=v["token"])
    if "identifier" in v:
        if not got.get("ok"):
            raise _Mismatch(f"parse: rejected a well-formed token ({got.get('reason')})")
        _expect("parse token_hex", v["token_hex"], got.get("token_hex"))
        _expect("parse identifier", v["identifier"], got.get("identifier"))
        _expect("parse caveats", [c["hex"] for c in v["caveats"]], got.get("caveats"))
        _expect("parse signature", v["signature"], got.get("signature"))
        return
    reason = v["expected"]["reason"]
    _expect("parse ok", False, got.get("ok"))
    _expect("parse reason", reason, got.get("reason"))


def _check_mint(a: Adapter, v: dict[str, Any]) -> None:
    ident, key = v["identifier"], v["keys"][0]
    got = a.call("mint", root_key=key["root_key"], key_id=ident["key_id"],
                 token_id=ident["token_id"], issued_at=ident["issued_at"],
                 caveats=[c["hex"] for c in v["caveats"]])
    _expect("mint derived_key", v["mint"]["derived_key"], got.get("derived_key"))
    _expect("mint chain", v["mint"]["chain"], got.get("chain"))
    _expect("mint token", v["token"], got.get("token"))


def _check_attenuate(a: Adapter, v: dict[str, Any]) -> None:
    got = a.call("attenuate", token=v["parent"], caveats=[c["hex"] for c in v["attenuate"]])
    _expect("attenuate token", v["token"], got.get("token"))
    if "chain_id" in v:
        _expect("attenuate chain_id", v["chain_id"], got.get("chain_id"))


def _check_digest(a: Adapter, v: dict[str, Any]) -> None:
    r = v["request_digest"]
    got = a.call("request_digest", method=r["method"], path=r["path"], body_hex=r["body_hex"])
    _expect("request_digest", r["digest"], got.get("digest"))


def _check_access_digest(a: Adapter, v: dict[str, Any]) -> None:
    r = v["access_digest"]
    got = a.call("access_digest", scopes=r["scopes"], summary=r["summary"], request=r["request"])
    _expect("access_digest", r["digest"], got.get("digest"))


def _check_approval(a: Adapter, v: dict[str, Any]) -> None:
    ap = v["approval"]
    keys = {k["key_id"]: k["root_key"] for k in v["keys"]}
    got = a.call("issue_approval", kind=ap["kind"], root_key=keys[ap["key_id"]],
                 key_id=ap["key_id"], approval_id=ap["approval_id"], token_id=ap["token_id"],
                 digest=ap["digest"], expires=ap["expires"])
    _expect("issue_approval", ap["string"], got.get("approval"))


def _compare_decision(where: str, expected: dict[str, Any], got: dict[str, Any]) -> None:
    result = "allow" if got.get("allowed") is True else "deny"
    if "counter" not in got:
        raise _Mismatch(f"{where}: the decision has no counter member (null unless the "
                        "denial is on a counter)")
    if expected["result"] == "deny":
        if result != "deny" or got.get("reason") != expected["reason"]:
            raise _Mismatch(f"{where}: expected deny {expected['reason']}, got {result} "
                            f"{got.get('reason')} ({got.get('message', '')})")
        _expect(f"{where} counter", expected.get("counter"), got["counter"])
        return
    if result != "allow":
        raise _Mismatch(f"{where}: expected allow, got deny {got.get('reason')} "
                        f"({got.get('message', '')})")
    _expect(f"{where} reason", None, got.get("reason"))
    _expect(f"{where} counter", None, got["counter"])
    _expect(f"{where} debits", expected["debits"], got.get("debits"))
    _expect(f"{where} approval_id", expected["approval_id"], got.get("approval_id"))
    if "limits" in expected:
        _expect(f"{where} limits", expected["limits"], got.get("limits"))
        # JSON objects compare unordered; the order of confirm_above is specified too.
        _expect(f"{where} confirm_above order", list(expected["limits"]["confirm_above"]),
                list((got.get("limits") or {}).get("confirm_above") or {}))


def _verify(a: Adapter, v: dict[str, Any], token: str, ctx: dict[str, Any],
            counters: dict[str, int], revoked: list[str]) -> dict[str, Any]:
    return a.call("verify", keys=v["keys"], token=token, now=ctx["now"],
                  request=ctx["request"], counters=counters, revoked=revoked)


def _check_decision(a: Adapter, v: dict[str, Any]) -> None:
    if "steps" not in v:
        c = v["context"]
        got = _verify(a, v, v["token"], c, c["counters"], c["revoked"])
        _compare_decision("verify", v["expected"], got)
        return
    counters: dict[str, int] = dict(v["counters"])
    for n, step in enumerate(v["steps"], 1):
        got = _verify(a, v, step.get("token", v["token"]), step, dict(counters), [])
        _compare_decision(f"verify step {n}", step["expected"], got)
        if got.get("allowed") is True:
            for d in got.get("debits", []):
                counters[d["counter_key"]] = counters.get(d["counter_key"], 0) + d["amount"]
        _expect(f"counters after step {n}", step["counters_after"], counters)


def _checks(v: dict[str, Any]) -> Iterator[tuple[str, Callable[[Adapter, dict[str, Any]], None]]]:
    """The checks a vector states, by the fields it has (spec/test-vectors.md)."""
    expected_reason = v.get("expected", {}).get("reason")
    if "identifier" in v or expected_reason in PARSE_REASONS:
        yield "parse", _check_parse
    if "mint" in v:
        yield "mint", _check_mint
    if "parent" in v:
        yield "attenuate", _check_attenuate
    if "request_digest" in v:
        yield "request_digest", _check_digest
    if "access_digest" in v:
        yield "access_digest", _check_access_digest
    if "approval" in v and any(k["key_id"] == v["approval"]["key_id"] for k in v["keys"]):
        yield "issue_approval", _check_approval
    yield "verify", _check_decision


def run_vector(a: Adapter, group: str, v: dict[str, Any]) -> VectorResult:
    result = VectorResult(v["id"], group)
    for name, check in _checks(v):
        result.checks.append(name)
        try:
            check(a, v)
        except _Mismatch as exc:
            result.failures.append(str(exc))
        except AdapterError as exc:
            result.failures.append(f"{name}: {exc}")
    return result


@dataclass
class Report:
    implementation: dict[str, Any]
    command: str
    ops: list[str]
    results: list[VectorResult]

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for r in self.results:
            c = out.setdefault(r.group, {"passed": 0, "failed": 0, "total": 0})
            c["passed" if r.passed else "failed"] += 1
            c["total"] += 1
        return out

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed

    @property
    def ok(self) -> bool:
        return bool(self.results) and self.failed == 0

    @property
    def name(self) -> str:
        impl = self.implementation
        return f"{impl.get('name', self.command)} {impl.get('version', '')}".strip()

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL, "implementation": self.implementation,
            "command": self.command, "ops": self.ops,
            "summary": {"passed": self.passed, "failed": self.failed,
                        "total": len(self.results), "groups": self.counts()},
            "vectors": [r.to_json() for r in self.results],
        }

    def text(self) -> str:
        lines = [f"implementation: {self.name} ({self.command})"]
        for r in self.results:
            lines.append(f"{'PASS' if r.passed else 'FAIL'} {r.id}")
            lines.extend(f"     {f}" for f in r.failures)
        lines.append(f"{'group':<10} {'passed':>6} {'failed':>6} {'total':>6}")
        for group, c in self.counts().items():
            lines.append(f"{group:<10} {c['passed']:>6} {c['failed']:>6} {c['total']:>6}")
        lines.append(f"{self.passed} passed, {self.failed} failed")
        return "\n".join(lines)


def run(command: str, vectors: dict[str, list[Any]], timeout: float = DEFAULT_TIMEOUT) -> Report:
    """Run every vector against the implementation ``command``. Raises AdapterFailed if it
    cannot be started or does not speak the protocol."""
    with Adapter(command, timeout) as a:
        hello = dict(a.hello)
        results = [run_vector(a, group, v) for group, tests in vectors.items() for v in tests]
    return Report(hello.get("implementation") or {}, command, list(hello.get("ops", [])), results)


def matrix_markdown(reports: list[Report], vectors_dir: str) -> str:
    """The implementation matrix (spec/implementations.md), generated from a run."""
    groups = list(dict.fromkeys(r.group for rep in reports for r in rep.results))
    commands = " ".join(f"--impl {shlex.quote(rep.command)}" for rep in reports)
    head = ["| group | vectors |", "|---|---:|"]
    head[0] += "".join(f" {rep.name} |" for rep in reports)
    head[1] += "---|" * len(reports)
    rows = []
    for g in groups:
        total = max(rep.counts().get(g, {}).get("total", 0) for rep in reports)
        cells = []
        for rep in reports:
            c = rep.counts().get(g, {"passed": 0, "total": 0})
            mark = "pass" if c["passed"] == c["total"] == total else "FAIL"
            cells.append(f" {c['passed']}/{c['total']} {mark} |")
        rows.append(f"| {g} | {total} |" + "".join(cells))
    all_total = max(len(rep.results) for rep in reports)
    rows.append(f"| **all** | {all_total} |" + "".join(
        f" **{rep.passed}/{len(rep.results)}** |" for rep in reports))
    impls = [
        f"- **{rep.name}** ({rep.implementation.get('language', 'unknown language')}): "
        f"`{rep.command}`; ops: {', '.join(rep.ops)}"
        for rep in reports
    ]
    return "\n".join([
        "# Implementation matrix",
        "",
        "Status: generated; do not edit by hand. Which implementation passes which group of",
        f"conformance vectors in `{vectors_dir}`, through the adapter protocol of",
        "[conformance.md](conformance.md). Regenerate after changing vectors or implementations:",
        "",
        "```",
        f"capwallet conformance {commands} --matrix spec/implementations.md",
        "```",
        "",
        *head,
        *rows,
        "",
        "Implementations:",
        "",
        *impls,
        "",
    ])
