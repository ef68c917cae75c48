"""The capwallet CLI end to end, as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from capwallet.token import Token

NOW = "1790000000"


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "capwallet", *args],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "root.json"
    r = run("keygen", "--out", str(path), "--json")
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    secret = json.loads(path.read_text())["key"]
    assert secret not in r.stdout + r.stderr  # the key itself is never printed
    return path


def test_mint_attenuate_inspect_verify(key_file: Path) -> None:
    r = run("mint", "--key-file", str(key_file), "--provider", "anthropic",
            "--model", "claude-sonnet-4-5", "--budget", "10EUR/month",
            "--max-input-tokens", "50000", "--scope", "posts:read", "--expires", "30d",
            "--confirm-above", "0.50EUR", "--now", NOW)
    assert r.returncode == 0, r.stderr
    parent = r.stdout.strip()
    assert parent.startswith("cwt1_")

    r = run("attenuate", "-", "--max-output-tokens", "200", "--budget", "1EUR/day",
            "--now", NOW, stdin=parent)
    assert r.returncode == 0, r.stderr
    child = r.stdout.strip()

    r = run("inspect", child, "--json")
    info = json.loads(r.stdout)
    assert info["verified"] is False
    assert info["effective_limits"]["max_output_tokens"] == 200
    assert [c["type"] for c in info["caveats"]][-2:] == ["budget", "max-output-tokens"]
    assert "UNVERIFIED" in run("inspect", child).stdout
    # The chain id the wallet shows a sub-task by: the child's, not the parent's.
    assert info["chain_id"] == Token.parse(child).chain_id != Token.parse(parent).chain_id
    assert f"chain id   {info['chain_id']}" in run("inspect", child).stdout

    call = ["--provider", "anthropic", "--model", "claude-sonnet-4-5", "--input-tokens", "100",
            "--now", NOW]
    r = run("verify", child, "--key-file", str(key_file), *call, "--output-tokens", "100",
            "--cost", "0.20EUR", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    decision = json.loads(r.stdout)
    assert decision["allowed"] is True
    assert len(decision["debits"]) == 2  # the parent's monthly and the child's daily budget

    # The child is narrower than the parent: 300 output tokens pass the parent only.
    r = run("verify", child, "--key-file", str(key_file), *call, "--output-tokens", "300",
            "--cost", "0.20EUR")
    assert r.returncode == 1
    assert r.stdout.startswith("deny: output_too_large")
    r = run("verify", parent, "--key-file", str(key_file), *call, "--output-tokens", "300",
            "--cost", "0.20EUR")
    assert r.returncode == 0

    # The daily child budget is 1 EUR: a 1.50 EUR call is refused with what is left.
    r = run("verify", child, "--key-file", str(key_file), *call, "--cost", "1.50EUR", "--json")
    assert r.returncode == 1
    decision = json.loads(r.stdout)
    assert decision["reason"] == "budget_exceeded"
    assert "1.00 EUR left" in decision["message"]


def test_origin_flag_binds_the_token_to_a_web_origin(key_file: Path) -> None:
    r = run("mint", "--key-file", str(key_file), "--origin", "https://Notes.example/",
            "--now", NOW, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["caveats"] == ["origin https://notes.example"]
    token = out["token"]
    base = ["verify", token, "--key-file", str(key_file), "--now", NOW, "--provider", "openai",
            "--model", "gpt-4o-mini"]
    assert run(*base, "--origin", "https://notes.example").returncode == 0
    assert run(*base).returncode == 0  # a server-side call sends no Origin
    r = run(*base, "--origin", "https://evil.example")
    assert r.returncode == 1 and r.stdout.startswith("deny: origin_mismatch")
    r = run("attenuate", token, "--origin", "https://evil.example", "--now", NOW)
    assert r.returncode == 0, r.stderr
    r = run("verify", r.stdout.strip(), "--key-file", str(key_file), "--now", NOW,
            "--provider", "openai", "--model", "gpt-4o-mini", "--origin", "https://notes.example")
    assert r.returncode == 1 and "origin_mismatch" in r.stdout
    r = run("mint", "--key-file", str(key_file), "--origin", "notes.example")
    assert r.returncode == 2 and "--origin" in r.stderr and "Traceback" not in r.stderr


def test_bad_input_is_one_line_and_exit_2(key_file: Path, tmp_path: Path) -> None:
    cases = [
        ["mint", "--key-file", str(key_file), "--budget", "10XYZ/month"],
        ["mint", "--key-file", str(key_file), "--budget", "10EUR/fortnight"],
        ["mint", "--key-file", str(key_file), "--expires", "next tuesday"],
        ["mint", "--key-file", str(key_file), "--budget", "0.505EUR"],
        ["mint", "--key-file", str(tmp_path / "missing.json")],
        ["inspect", "cwt1_not-a-token"],
        ["attenuate", "garbage", "--max-output-tokens", "5"],
        ["keygen", "--out", str(key_file)],  # refuses to overwrite
        ["mint", "--key-file", str(key_file), "--max-input-tokens", "lots"],
        ["mint", "--key-file", str(key_file), "--logging", "verbose"],
        ["verify", "cwt1_x"],  # --key-file missing
        ["frobnicate"],
    ]
    for argv in cases:
        r = run(*argv)
        assert r.returncode == 2, (argv, r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (argv, r.stderr)
        assert "Traceback" not in r.stderr


def test_verify_wrong_key_is_a_deny(key_file: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    run("keygen", "--out", str(other))
    token = run("mint", "--key-file", str(key_file), "--now", NOW).stdout.strip()
    r = run("verify", token, "--key-file", str(other), "--now", NOW, "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["reason"] == "unknown_key"
    assert token not in r.stdout  # decisions carry the token id, never the token


MAX_TIME = str(2**53 - 1)


def test_verify_in_the_far_future_denies_without_a_traceback(key_file: Path) -> None:
    """Issue 13 'Year 10000': now up to 2^53-1 is allowed; a calendar budget then denies with
    period_out_of_range (it printed a traceback: datetime stops at the year 9999)."""
    token = run("mint", "--key-file", str(key_file), "--budget", "10EUR/month",
                "--expires", MAX_TIME, "--now", NOW).stdout.strip()
    r = run("verify", token, "--key-file", str(key_file), "--now", MAX_TIME,
            "--provider", "openai", "--model", "gpt-4o-mini", "--cost", "0.10EUR")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.startswith("deny: period_out_of_range"), r.stdout
    assert "Traceback" not in r.stderr
    r = run("inspect", token)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert f"{MAX_TIME} (Unix time, after the year 9999)" in r.stdout


@pytest.mark.parametrize("now", ["-1", str(2**53)])
def test_a_now_outside_the_specs_range_is_a_usage_error_not_a_traceback(
        key_file: Path, now: str) -> None:
    """The verifier refuses a clock outside 0..2^53-1 as the caller's error (8d56eeb,
    spec/verification.md#inputs); the CLI's --now is the user's input, so each command that
    takes one says so, exit 2, where verify printed a ValueError traceback (mint too)."""
    token = run("mint", "--key-file", str(key_file), "--now", NOW).stdout.strip()
    for args in (("verify", token, "--key-file", str(key_file)),
                 ("mint", "--key-file", str(key_file)),
                 ("attenuate", token, "--expires", "+1h")):
        r = run(*args, "--now", now)
        assert r.returncode == 2, (args[0], r.stdout, r.stderr)
        assert "Traceback" not in r.stderr, r.stderr
        assert "--now must be a Unix time from 0 to 2^53-1" in r.stderr, r.stderr


def test_a_token_with_whitespace_is_malformed_as_in_the_library(key_file: Path) -> None:
    """Issue 13 'CLI whitespace': the CLI stripped ' cwt1_... ' and allowed it; the spec and
    the library call it malformed. From stdin one trailing line break is removed."""
    token = run("mint", "--key-file", str(key_file), "--now", NOW).stdout.strip()
    base = ["--key-file", str(key_file), "--now", NOW]
    for text in (f" {token} ", f"{token} ", f"\t{token}", f"{token}\n"):
        r = run("verify", text, *base)
        assert r.returncode == 1 and r.stdout.startswith("deny: malformed"), (text, r.stdout)
    assert run("verify", token, *base).returncode == 0
    assert run("verify", "-", *base, stdin=token + "\n").returncode == 0
    assert run("verify", "-", *base, stdin=token + "\r\n").returncode == 0
    for text in (token + "\n\n", " " + token + "\n", token + " \n"):
        r = run("verify", "-", *base, stdin=text)
        assert r.returncode == 1 and r.stdout.startswith("deny: malformed"), (text, r.stdout)


README = Path(__file__).resolve().parents[1] / "README.md"


def test_verify_exit_codes_agree_with_help_and_readme(key_file: Path, tmp_path: Path) -> None:
    """A token that does not parse is judged and denied (1, reason malformed); a command that
    cannot run as given is bad input (2). --help and the README say the same."""
    r = run("verify", "garbage", "--key-file", str(key_file), "--json")
    assert r.returncode == 1, r.stderr
    assert json.loads(r.stdout)["reason"] == "malformed"
    r = run("verify", "cwt1_AAAA", "--key-file", str(key_file))
    assert r.returncode == 1 and r.stdout.startswith("deny: malformed")
    r = run("verify", "garbage", "--key-file", str(tmp_path / "missing.json"))
    assert r.returncode == 2
    r = run("verify", "garbage", "--key-file", str(key_file), "--cost", "lots")
    assert r.returncode == 2 and "--cost" in r.stderr
    helptext = " ".join(run("verify", "--help").stdout.split())
    assert "1 it denies it" in helptext and "denied as malformed" in helptext
    assert "2 the command itself is wrong" in helptext
    readme = " ".join(README.read_text().split())
    assert "`verify` exits 0 when the token allows the request, 1 when it denies it" in readme
    assert "is denied too, with reason `malformed`), and 2 when the command itself is wrong" in (
        readme)


def test_verify_cost_to_the_microunit(key_file: Path) -> None:
    token = run("mint", "--key-file", str(key_file), "--budget", "1EUR/day",
                "--now", NOW).stdout.strip()
    r = run("verify", token, "--key-file", str(key_file), "--provider", "openai", "--model",
            "m", "--cost", "0.000123EUR", "--now", NOW, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    [debit] = json.loads(r.stdout)["debits"]
    assert debit["amount"] == 12_300  # microunits: millionths of a cent
    # Eight places is the microunit of a cent; a ninth cannot be counted.
    r = run("verify", token, "--key-file", str(key_file), "--cost", "0.000000001EUR")
    assert r.returncode == 2 and "microunits" in r.stderr
    # Exactly the budget passes; one microunit more is refused.
    r = run("verify", token, "--key-file", str(key_file), "--provider", "openai", "--model",
            "m", "--cost", "1.00000000EUR", "--now", NOW)
    assert r.returncode == 0, r.stdout
    r = run("verify", token, "--key-file", str(key_file), "--provider", "openai", "--model",
            "m", "--cost", "1.00000001EUR", "--now", NOW)
    assert r.returncode == 1 and "budget_exceeded" in r.stdout


def test_verify_json_money_units_are_what_help_and_readme_say(key_file: Path) -> None:
    """verify --json has money in two units (spec/caveats.md#amounts-and-microunits): the
    debits in microunits, the effective limits in the caveats' minor units. The values stay
    as they are (the conformance runner compares them); --help and the README say which is
    which, with the README's own figures checked against a real run."""
    token = run("mint", "--key-file", str(key_file), "--budget", "1EUR/day",
                "--confirm-above", "0.50EUR", "--now", NOW).stdout.strip()
    r = run("verify", token, "--key-file", str(key_file), "--provider", "openai", "--model",
            "m", "--cost", "0.20EUR", "--now", NOW, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    decision = json.loads(r.stdout)
    [counter] = decision["limits"]["counters"]
    assert (counter["limit"], counter["unit"]) == (100, "EUR")  # minor units
    assert decision["limits"]["confirm_above"] == {"EUR": 50}  # minor units
    [debit] = decision["debits"]
    assert (debit["amount"], debit["limit"]) == (20_000_000, 100_000_000)  # microunits
    helptext = " ".join(run("verify", "--help").stdout.split())
    assert "in `debits` and `counter` a budget's amount, limit and used are microunits" in (
        helptext)
    assert "in `limits` a budget counter's limit and `confirm_above` are the caveats' own " \
           "minor units" in helptext
    readme = " ".join(README.read_text().split())
    assert "a budget debit's `limit` of 1 EUR is `100000000`" in readme
    assert "that budget's `limit` is `100`, `confirm_above` 0.50 EUR is `50`" in readme


def test_inspect_reads_like_the_readme(key_file: Path) -> None:
    token = run("mint", "--key-file", str(key_file), "--app", "https://blog.example",
                "--provider", "anthropic", "--model", "claude-sonnet-4-5", "--budget",
                "10EUR/month", "--max-input-tokens", "50000", "--scope", "posts:read",
                "--expires", "30d", "--confirm-above", "0.50EUR", "--token-quota",
                "2000000/day", "--rate", "30", "--now", NOW).stdout.strip()
    out = run("inspect", token).stdout
    caveats = [line.split(". ", 1)[1].split()[0] for line in out.splitlines()
               if line[:5].strip().rstrip(".").isdigit()]
    assert caveats == ["app", "expires", "providers", "models", "budget", "token-quota", "rate",
                       "max-input-tokens", "scopes", "confirm-above"]
    assert "confirm above: 0.50 EUR" in out and "{'EUR'" not in out
    assert "budget 10.00 EUR per month" in out
    assert "token-quota 2000000 tokens per day" in out or "2000000" in out


def test_output_into_a_closed_pipe_is_no_traceback(key_file: Path) -> None:
    """`capwallet inspect T --json | head -c 100`: the reader closes the pipe early; the command
    stops quietly with 141 (128 + SIGPIPE, as a shell reports it), not a BrokenPipeError
    traceback (which is what `... --json | head` printed)."""
    token = run("mint", "--key-file", str(key_file), "--budget", "1EUR/day",
                "--now", NOW).stdout.strip()
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        r = subprocess.run([sys.executable, "-m", "capwallet", "inspect", token, "--json"],
                           stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
                           check=False)
    finally:
        os.close(write_end)
    assert r.returncode == 141, r.stderr
    assert r.stderr == ""


def test_every_command_has_help_and_json() -> None:
    """Every leaf command (keygen ... serve, provider add/list/remove) takes --json, and says
    what it does in --help; a command added later without them fails here."""
    import argparse

    from capwallet.cli import build_parser

    def leaves(p: argparse.ArgumentParser, path: tuple[str, ...]
               ) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return [(path, p)]
        return [leaf for name, child in subs[0].choices.items()
                for leaf in leaves(child, (*path, name))]

    found = leaves(build_parser(), ())
    assert len(found) >= 16
    for path, p in found:
        flags = {s for a in p._actions for s in a.option_strings}
        assert "--json" in flags, " ".join(path)
        assert p.description or p.format_help().count("\n") > 3, " ".join(path)
