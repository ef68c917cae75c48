"""LogRedactor keeps provider keys and whole capability tokens out of log output, including
the traceback text that log.exception writes (the exception's message is repeated there)."""

from __future__ import annotations

import io
import logging
import secrets
from collections.abc import Iterator

import pytest

from capwallet import caveats as cav
from capwallet.keys import RootKey
from capwallet.token import mint
from reference_relay.app import LogRedactor

KEY = "sk-test-" + secrets.token_hex(20)
TOKEN = mint(RootKey.generate(), [cav.Budget(100, "USD", "month")]).serialize()


class Captured:
    def __init__(self, logger: logging.Logger, stream: io.StringIO) -> None:
        self.logger, self.stream = logger, stream

    @property
    def text(self) -> str:
        return self.stream.getvalue()


@pytest.fixture(params=["logger", "handler"])
def captured(request: pytest.FixtureRequest) -> Iterator[Captured]:
    """A real logger writing through a real StreamHandler, with the redactor where the relay
    puts it (on its loggers) or where an embedding app does (on its handlers)."""
    redactor = LogRedactor()
    redactor.add(KEY)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"test_redaction.{secrets.token_hex(4)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    (logger if request.param == "logger" else handler).addFilter(redactor)
    try:
        yield Captured(logger, stream)
    finally:
        logger.removeHandler(handler)


def fail_with_secrets() -> None:
    try:
        raise ValueError(f"upstream refused key {KEY}")
    except ValueError as exc:
        raise RuntimeError(f"while forwarding for {TOKEN}") from exc


def test_exception_text_is_scrubbed(captured: Captured) -> None:
    try:
        fail_with_secrets()
    except RuntimeError as exc:
        captured.logger.exception("internal error: %s", type(exc).__name__)
    out = captured.text
    assert "Traceback (most recent call last)" in out and "ValueError" in out
    assert "RuntimeError: while forwarding for cwt1_[redacted]" in out
    assert "upstream refused key [provider key redacted]" in out
    assert KEY not in out and TOKEN not in out


def test_message_and_stack_info_are_scrubbed(captured: Captured) -> None:
    captured.logger.warning("token %s used key %s", TOKEN, KEY, stack_info=True)
    record = captured.logger.makeRecord(
        captured.logger.name, logging.ERROR, __file__, 1, "with a stack", (), None,
        sinfo=f"Stack (most recent call last):\n  key={KEY} token={TOKEN}")
    captured.logger.handle(record)
    out = captured.text
    assert "Stack (most recent call last)" in out
    assert "token cwt1_[redacted] used key [provider key redacted]" in out
    assert "key=[provider key redacted] token=cwt1_[redacted]" in out
    assert KEY not in out and TOKEN not in out


def test_unformattable_message_does_not_leak_its_arguments(
        captured: Captured, capsys: pytest.CaptureFixture[str]) -> None:
    captured.logger.error("one placeholder %s %d", KEY)  # wrong arguments for the format
    out = captured.text
    assert "arguments dropped" in out
    # logging reports a record it cannot format on stderr, with its arguments.
    assert KEY not in out and KEY not in capsys.readouterr().err


def test_no_exception_keeps_the_record() -> None:
    redactor = LogRedactor()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "plain %s", ("text",), None)
    assert redactor.filter(record)
    assert (record.msg, record.args, record.exc_info, record.exc_text) == (
        "plain %s", ("text",), None, None)
