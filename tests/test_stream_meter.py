"""StreamMeter reads a burst in a few scans; it must meter and pass on exactly what reading it
event by event does (the reference below is the per-event reader it replaced), for any stream
and any way the stream is cut into reads (hypothesis)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from reference_relay.metering import _EVENT_END, StreamMeter


class PerEventMeter(StreamMeter):
    """The reference: every whole event split out and judged on its own."""

    def feed(self, chunk: bytes) -> bytes:
        buf = self._buf + chunk if self._buf else chunk
        kept: list[bytes] = []
        dropped = False
        start = 0
        for m in _EVENT_END.finditer(buf):
            if self._event(buf[start:m.start()]):
                kept.append(buf[start:m.end()])
            else:
                dropped = True
            start = m.end()
        self._buf = buf[start:]
        return b"".join(kept) if dropped else buf[:start]


def _data(obj: object) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode()


def _chunk(text: str) -> bytes:
    return _data({"id": "c", "choices": [{"index": 0, "delta": {"content": text}}],
                  "usage": None})


OPENAI_EVENTS = [
    _chunk("Hello"), _chunk(' "usage" of [DONE] and message_delta'),
    _data({"id": "c", "choices": [{"index": 0, "delta": {}}]}),  # no usage key at all
    _data({"id": "c", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2,
                                               "total_tokens": 9}}),
    _data({"id": "c", "choices": [{"index": 0, "delta": {"content": "x"}}],
           "usage": {"prompt_tokens": 5, "completion_tokens": 1}}),  # usage with choices
    b'data: {"id":"c",\ndata: "usage":\ndata: {"prompt_tokens":3,"completion_tokens":4}}',
    b'data: {"usage": null, "choices": []}',  # a space: read the slow way, same result
    b"data: [DONE]", b": keep-alive", b"event: ping", b"id: 7\ndata: {\"usage\":null}",
    b"data: not json", b'data: ["usage"]',
]
ANTHROPIC_EVENTS = [
    b"event: message_start\n" + _data({"type": "message_start", "message": {"usage": {
        "input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 4}}}),
    b"event: content_block_delta\n" + _data({"type": "content_block_delta", "delta": {
        "type": "text_delta", "text": "message_delta message_stop"}}),
    b"event: message_delta\n" + _data({"type": "message_delta",
                                      "usage": {"output_tokens": 16}}),
    b"event: message_stop\n" + _data({"type": "message_stop"}),
    b"event: ping\n" + _data({"type": "ping"}), b": comment",
]
RESPONSES_EVENTS = [
    b"event: response.output_text.delta\n" + _data({
        "type": "response.output_text.delta", "delta": '"response.completed"'}),
    b"event: response.completed\n" + _data({"type": "response.completed", "response": {
        "usage": {"input_tokens": 9, "output_tokens": 3}, "output": [
            {"type": "web_search_call"}, {"type": "message"}]}}),
    b"event: response.failed\n" + _data({"type": "response.failed", "response": {}}),
    b"data: [DONE]",
]
FLAVORS = {"openai": OPENAI_EVENTS, "anthropic": ANTHROPIC_EVENTS,
           "responses": RESPONSES_EVENTS}


@st.composite
def streams(draw: st.DrawFn) -> tuple[str, bool, bytes, list[int]]:
    flavor = draw(st.sampled_from(sorted(FLAVORS)))
    events = draw(st.lists(st.sampled_from(FLAVORS[flavor]), max_size=12))
    seps = draw(st.lists(st.sampled_from([b"\n\n", b"\r\n\r\n"]), min_size=len(events),
                         max_size=len(events)))
    body = b"".join(e + s for e, s in zip(events, seps, strict=True))
    if draw(st.booleans()):
        body += draw(st.sampled_from(FLAVORS[flavor]))  # an unterminated last event
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=8)))
    return flavor, draw(st.booleans()), body, cuts


def _run(meter: StreamMeter, body: bytes, cuts: list[int]) -> tuple[bytes, list[bytes]]:
    out = []
    prev = 0
    for cut in [*cuts, len(body)]:
        out.append(meter.feed(body[prev:cut]))
        prev = cut
    out.append(meter.flush())
    return b"".join(out), out


@settings(max_examples=400, deadline=None)
@given(streams())
def test_burst_metering_matches_reading_event_by_event(
        case: tuple[str, bool, bytes, list[int]]) -> None:
    flavor, drop, body, cuts = case
    fast, ref = (StreamMeter(flavor, drop_usage_chunk=drop),
                 PerEventMeter(flavor, drop_usage_chunk=drop))
    got, pieces = _run(fast, body, cuts)
    want, ref_pieces = _run(ref, body, cuts)
    assert got == want
    assert pieces == ref_pieces  # nothing passed on later than the per-event reader did
    assert (fast.usage, fast.final, fast.done, fast.saw_event) == (
        ref.usage, ref.final, ref.done, ref.saw_event)


@settings(max_examples=300, deadline=None)
@given(streams())
def test_the_plain_events_first_then_the_rest_meters_the_same(
        case: tuple[str, bool, bytes, list[int]]) -> None:
    """feed_plain (the relay's first burst) stops before the first marked event; feeding
    on from there gives the same bytes and the same metering as feeding it all."""
    flavor, drop, body, cuts = case
    cut = cuts[0] if cuts else len(body)
    split = StreamMeter(flavor, drop_usage_chunk=drop)
    first = split.feed_plain(body[:cut])
    if first:
        assert split.saw_event or not any(
            line.startswith(b"data:") for line in first.splitlines())
    got = first + split.feed(b"") + split.feed(body[cut:]) + split.flush()
    ref = PerEventMeter(flavor, drop_usage_chunk=drop)
    want = ref.feed(body[:cut]) + ref.feed(body[cut:]) + ref.flush()
    assert got == want
    assert (split.usage, split.final, split.done, split.saw_event) == (
        ref.usage, ref.final, ref.done, ref.saw_event)


def test_the_first_burst_stops_before_its_usage_event() -> None:
    events = b"".join(_chunk(f" w{i}") + b"\n\n" for i in range(16))
    usage = _data({"id": "c", "choices": [], "usage": {"prompt_tokens": 7,
                                                      "completion_tokens": 16}}) + b"\n\n"
    meter = StreamMeter("openai", drop_usage_chunk=True)
    assert meter.feed_plain(events + usage + b"data: [DONE]\n\n") == events
    assert meter.has_whole and meter.usage is None and meter.saw_event
    assert meter.feed(b"") == b"data: [DONE]\n\n"
    assert not meter.has_whole and meter.final and meter.done


def test_a_long_burst_passes_in_one_slice() -> None:
    """500 content events and the usage at the end, in one read: everything before the
    usage event is passed as it is (the same bytes object is not required, the bytes are)."""
    events = [_chunk(f" w{i}") + b"\n\n" for i in range(500)]
    usage = _data({"id": "c", "choices": [], "usage": {"prompt_tokens": 7,
                                                      "completion_tokens": 500}}) + b"\n\n"
    body = b"".join(events) + usage + b"data: [DONE]\n\n"
    meter = StreamMeter("openai", drop_usage_chunk=True)
    assert meter.feed(body) == b"".join(events) + b"data: [DONE]\n\n"
    assert meter.final and meter.done and meter.usage is not None
    assert (meter.usage.input_tokens, meter.usage.output_tokens) == (7, 500)
