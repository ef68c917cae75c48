"""The fake provider's server: a real HTTP server that speaks the OpenAI and Anthropic wire formats.

It stands for the outside world (OpenAI, Anthropic, a local Ollama) in the relay's tests, its
benchmark baseline and the demo, so it answers closely enough to the real APIs that the official
`openai` and `anthropic` SDKs accept its replies, streaming included, and it can misbehave on
demand the ways real providers do.

Routes
    POST /v1/chat/completions   OpenAI; `Authorization: Bearer <key>`; stream, stream_options,
                                n, max_tokens, max_completion_tokens
    POST /v1/responses          OpenAI Responses API, plain and streamed (fake_provider.responses)
    POST /v1/moderations        OpenAI; never flags; one result per input string
    POST /v1beta/openai/chat/completions  Gemini's OpenAI-compatible flavour: as chat
                                completions, but a gemini-2.5* model reports 8 thinking tokens
                                in total_tokens and completion_tokens_details only
    POST /v1/embeddings         OpenAI; input string, list of strings, token ids or lists of them;
                                encoding_format float|base64; dimensions (default 8)
    POST /v1/messages           Anthropic; `x-api-key: <key>` or `Authorization: Bearer <key>`
                                (the current anthropic SDK sends the latter); max_tokens
                                required; stream
    POST /v1/messages/count_tokens  Anthropic; {"input_tokens": N} by the formula below
    GET  /v1/models             OpenAI list, or the Anthropic list when the request carries
                                anthropic-version or x-api-key
    POST/GET/DELETE /_fake/faults    arm / list / clear queued fault modes
    GET/DELETE /_fake/requests       the received /v1 requests (refused ones too), or clear them
The /_fake control routes take no key: the server only ever listens on loopback for tests.

Token counts (deterministic, so tests can compute the expected usage by hand)
    text(s)        = ceil(len(s) / 4), len in Unicode code points
    content(c)     = text(c) for a string; for a list of parts, the sum of text(part.text) over
                     parts carrying a string "text", plus 85 for every other part (images...)
    chat input     = 3 + sum over messages of (4 + content(message.content)); an Anthropic
                     `system` prompt counts as one more message; tools and other fields are free
    embedding input = sum of text(s) over string inputs, plus the length of each token-id list
    output         = min(cap, default_reply_tokens) per choice, where cap is max_tokens (and/or
                     max_completion_tokens, the smaller one wins) or unlimited when absent;
                     a `long:<n>` fault makes it n whatever the cap. OpenAI completion_tokens is
                     that times `n`. The reply text is exactly that many words separated by
                     single spaces; a stream sends one word per content chunk (" word" after the
                     first), so the chunks concatenate to the non-stream text.
    finish reason  = "length" / "max_tokens" when the cap cut the reply short, else
                     "stop" / "end_turn". Anthropic's message_start carries output_tokens 1, as the
                     real API does; the final count is in message_delta.

Fault modes (after auth and validation; the failing request is still recorded)
    delay:<ms>        sleep ms before answering
    http500, http429  the provider's real error body (429 with `retry-after: 1`)
    reset             close the TCP connection with a RST and no response at all
    malformed         200 with a truncated JSON body, or an SSE stream with a broken data line
    stream_cut:<k>    a stream sends its preamble and k content chunks, then the connection
                      closes: no finish chunk, usage, [DONE], content_block_stop or message_stop
    no_usage          omit usage everywhere (bodies, include_usage chunk, message_start/delta)
    no_output_count   the usage keeps its input count and leaves out the output's, as a
                      gateway that drops the field: chat without completion_tokens and
                      total_tokens, Responses without output_tokens and total_tokens, an
                      Anthropic answer without output_tokens and its stream's message_delta
                      with an empty usage (message_start keeps its output_tokens 1);
                      embeddings have no output count: unchanged
    slow_stream:<ms>  sleep ms before every stream frame after the first
    long:<n>          reply with n output tokens regardless of max_tokens
A model id `fault-<mode>` (e.g. `fault-http500`, `fault-delay:250`) always behaves that way.
`POST /_fake/faults {"mode": "...", "count": N}` queues a mode for the next N model calls
(chat, embeddings, messages) that pass auth and validation and don't name a fault model;
entries queue FIFO; "count" defaults to 1. Modes that only make sense for streams do nothing
to other calls. An unknown `fault-...` model gets 404 model_not_found; a bad queued mode, 400.

Recorded requests (GET /_fake/requests, the last 10,000, oldest first) are objects
    {"method", "path", "query", "headers", "auth_ok", "auth_header", "body", "fault", "status"}
where headers are all request headers except authorization and x-api-key (any other value
containing the key reads "[redacted]"), auth_header names the header that carried a credential
(or null), body is the parsed JSON (or null), fault the applied mode (or null) and status the
HTTP status sent (null when the connection was reset).

The API key is compared in constant time and never echoed: not in errors, not in the recorded
requests.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import struct
import sys
import threading
import time
from array import array
from collections.abc import Iterator, Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from fake_provider.calls import (
    CYCLE_KEY,
    ApiError,
    Call,
    CallFailed,
    EventStream,
    Flavor,
    ProviderState,
    apply_fault,
    begin_call,
    dumps,
    fault_kind,
    int_field,
    json_response,
    malformed_body,
    provider_state,
    requested_model,
    stream_flag,
    stream_response,
)
from fake_provider.faults import Fault, QueuedFault, parse_fault
from fake_provider.responses import responses_create
from fake_provider.tokens import (
    DEFAULT_REPLY_TOKENS,
    chat_input_tokens,
    reply_pieces,
    reply_text,
    text_tokens,
)
from reference_relay.listen import listen, serve_announced, url

DEFAULT_API_KEY = "sk-fake-provider-key"
DEFAULT_EMBEDDING_DIMENSIONS = 8
MAX_EMBEDDING_DIMENSIONS = 4096
MAX_CHOICES = 128
SYSTEM_FINGERPRINT = "fp_fake_provider"
GEMINI_THOUGHT_TOKENS = 8

OPENAI_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1-mini", "o4-mini",
                 "text-embedding-3-small", "text-embedding-3-large")
ANTHROPIC_MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-3-5-haiku-latest")


def embedding_vector(item: str | list[int], dimensions: int) -> list[float]:
    """A deterministic unit vector for an input, already rounded to float32 (as base64 ships it)."""
    data = item.encode() if isinstance(item, str) else json.dumps(item).encode()
    raw = hashlib.shake_128(data).digest(2 * dimensions)
    ints = struct.unpack(f"<{dimensions}h", raw)
    norm = sum(v * v for v in ints) ** 0.5 or 1.0
    return array("f", (v / norm for v in ints)).tolist()



def _sse(data: object, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + dumps(data) + b"\n\n"



def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise ApiError(400, "messages: expected a non-empty list of messages with a role",
                       param="messages")
    return messages



def _output_tokens(cap: int | None, default: int, fault: Fault | None) -> tuple[int, bool]:
    """(tokens per choice, whether the cap truncated the reply)."""
    if fault is not None and fault.kind == "long":
        return fault.arg, False
    if cap is not None and cap < default:
        return cap, True
    return default, False




# ---------------------------------------------------------------------------------------------
# OpenAI flavor


def _openai_usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }


async def _chat_completions(call: Call) -> Response:
    body = call.body
    model, model_fault = requested_model(body)
    messages = _messages(body)
    caps = [c for c in (int_field(body, "max_tokens", low=1),
                        int_field(body, "max_completion_tokens", low=1)) if c is not None]
    n = int_field(body, "n", low=1, high=MAX_CHOICES) or 1
    stream = stream_flag(body)
    stream_options = body.get("stream_options")
    if stream_options is not None:
        if not stream:
            raise ApiError(400, "The 'stream_options' parameter is only allowed when 'stream' "
                           "is enabled.", param="stream_options")
        if not isinstance(stream_options, dict):
            raise ApiError(400, "stream_options: expected an object", param="stream_options")
    include_usage = bool(stream and stream_options and stream_options.get("include_usage"))

    early = await apply_fault(call, model_fault)
    if early is not None:
        return early
    fault = call.fault
    state = provider_state(call.request)
    prompt = chat_input_tokens(messages)
    count, truncated = _output_tokens(min(caps) if caps else None,
                                      state.default_reply_tokens, fault)
    finish = "length" if truncated else "stop"
    usage = _openai_usage(prompt, count * n)
    if call.request.scope["path"].startswith("/v1beta/openai/") and model.startswith(
            "gemini-2.5"):
        # Gemini's OpenAI-compatible flavour: a thinking model spends GEMINI_THOUGHT_TOKENS,
        # reported in total_tokens and completion_tokens_details, not in completion_tokens.
        usage["completion_tokens_details"]["reasoning_tokens"] = GEMINI_THOUGHT_TOKENS
        usage["total_tokens"] += GEMINI_THOUGHT_TOKENS
    completion_id = f"chatcmpl-fake{call.request_id.removeprefix('req_fake')}"
    created = int(time.time())
    headers = {"x-request-id": call.request_id}
    no_usage = fault_kind(fault) == "no_usage"
    if fault_kind(fault) == "no_output_count":
        del usage["completion_tokens"], usage["total_tokens"]

    if not stream:
        text = reply_text(count)
        reply: dict[str, Any] = {
            "id": completion_id, "object": "chat.completion", "created": created,
            "model": model,
            "choices": [{"index": i,
                         "message": {"role": "assistant", "content": text, "refusal": None,
                                     "annotations": []},
                         "logprobs": None, "finish_reason": finish} for i in range(n)],
            "usage": usage, "service_tier": "default", "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        if no_usage:
            del reply["usage"]
        if fault_kind(fault) == "malformed":
            return malformed_body(reply)
        return json_response(reply, headers=headers)

    base = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
            "model": model, "service_tier": "default", "system_fingerprint": SYSTEM_FINGERPRINT}
    chunk_usage = {"usage": None} if include_usage and not no_usage else {}

    def chunk(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return b"data: " + dumps({
            **base,
            "choices": [{"index": index, "delta": delta, "logprobs": None,
                         "finish_reason": finish_reason}],
            **chunk_usage,
        }) + b"\n\n"

    preamble = [chunk(i, {"role": "assistant", "content": "", "refusal": None})
                for i in range(n)]
    if fault_kind(fault) == "malformed":
        broken = chunk(0, {"content": reply_pieces(max(count, 1))[0]})
        return EventStream(preamble, [broken[: len(broken) // 2] + b"\n\n"],
                            [b"data: [DONE]\n\n"], headers=headers)
    content = [chunk(i, {"content": piece}) for piece in reply_pieces(count) for i in range(n)]
    tail = [chunk(i, {}, finish) for i in range(n)]
    if include_usage and not no_usage:
        tail.append(b"data: " + dumps({**base, "choices": [], "usage": usage}) + b"\n\n")
    tail.append(b"data: [DONE]\n\n")
    return stream_response(preamble, content, tail, headers, fault)


async def _embeddings(call: Call) -> Response:
    body = call.body
    model, model_fault = requested_model(body)
    raw_input = body.get("input")
    items: list[str | list[int]]
    if isinstance(raw_input, str):
        items = [raw_input]
    elif isinstance(raw_input, list) and raw_input and all(
            isinstance(x, int) and not isinstance(x, bool) for x in raw_input):
        items = [raw_input]
    elif isinstance(raw_input, list) and raw_input and all(
            isinstance(x, str) or (isinstance(x, list) and x and all(
                isinstance(t, int) and not isinstance(t, bool) for t in x))
            for x in raw_input):
        items = list(raw_input)
    else:
        raise ApiError(400, "'input' must be a non-empty string, array of strings, array of "
                       "tokens or array of token arrays.", param="input")
    dimensions = int_field(body, "dimensions", low=1, high=MAX_EMBEDDING_DIMENSIONS)
    dimensions = dimensions or DEFAULT_EMBEDDING_DIMENSIONS
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise ApiError(400, "encoding_format must be 'float' or 'base64'",
                       param="encoding_format")

    early = await apply_fault(call, model_fault)
    if early is not None:
        return early
    prompt = sum(text_tokens(x) if isinstance(x, str) else len(x) for x in items)
    data = []
    for index, item in enumerate(items):
        vector = embedding_vector(item, dimensions)
        embedding: list[float] | str = (
            base64.b64encode(array("f", vector).tobytes()).decode()
            if encoding == "base64" else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    reply: dict[str, Any] = {"object": "list", "data": data, "model": model,
                             "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}
    kind = fault_kind(call.fault)
    if kind == "no_usage":
        del reply["usage"]
    if kind == "malformed":
        return malformed_body(reply)
    return json_response(reply, headers={"x-request-id": call.request_id})


# ---------------------------------------------------------------------------------------------
# Anthropic flavor


def _anthropic_request(body: dict[str, Any]) -> tuple[str, Fault | None, int, int]:
    """(model, model fault, max_tokens, input tokens); raises ApiError."""
    model, model_fault = requested_model(body)
    max_tokens = int_field(body, "max_tokens", low=1, required=True)
    assert max_tokens is not None
    messages = _messages(body)
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise ApiError(400, "system: expected a string or a list of text blocks",
                       param="system")
    return model, model_fault, max_tokens, chat_input_tokens(messages, system)


async def _messages_create(call: Call) -> Response:
    model, model_fault, max_tokens, prompt = _anthropic_request(call.body)
    stream = stream_flag(call.body)
    early = await apply_fault(call, model_fault)
    if early is not None:
        return early
    fault = call.fault
    kind = fault_kind(fault)
    count, truncated = _output_tokens(max_tokens, provider_state(call.request).default_reply_tokens,
                                      fault)
    stop_reason = "max_tokens" if truncated else "end_turn"
    message_id = f"msg_fake{call.request_id.removeprefix('req_fake')}"
    headers = {"request-id": call.request_id}

    def usage(output: int) -> dict[str, Any]:
        return {"input_tokens": prompt, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0, "output_tokens": output,
                "service_tier": "standard"}

    def answer_usage(output: int) -> dict[str, Any]:
        got = usage(output)
        if kind == "no_output_count":
            del got["output_tokens"]
        return got

    if not stream:
        reply: dict[str, Any] = {
            "id": message_id, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": reply_text(count)}],
            "stop_reason": stop_reason, "stop_sequence": None, "usage": answer_usage(count),
        }
        if kind == "no_usage":
            del reply["usage"]
        if kind == "malformed":
            return malformed_body(reply)
        return json_response(reply, headers=headers)

    start_message: dict[str, Any] = {
        "id": message_id, "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage(1),
    }
    delta: dict[str, Any] = {"type": "message_delta",
                             "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                             "usage": {"output_tokens": count}}
    if kind == "no_usage":
        del start_message["usage"]
        del delta["usage"]
    if kind == "no_output_count":
        delta["usage"] = {}
    preamble = [
        _sse({"type": "message_start", "message": start_message}, "message_start"),
        _sse({"type": "content_block_start", "index": 0,
              "content_block": {"type": "text", "text": ""}}, "content_block_start"),
        _sse({"type": "ping"}, "ping"),
    ]
    stop = _sse({"type": "message_stop"}, "message_stop")
    if kind == "malformed":
        broken = _sse({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "text_delta", "text": reply_pieces(max(count, 1))[0]}},
                      "content_block_delta")
        return EventStream(preamble, [broken[: len(broken) // 2] + b"\n\n"], [stop],
                            headers=headers)
    content = [
        _sse({"type": "content_block_delta", "index": 0,
              "delta": {"type": "text_delta", "text": piece}}, "content_block_delta")
        for piece in reply_pieces(count)
    ]
    tail = [
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        _sse(delta, "message_delta"),
        stop,
    ]
    return stream_response(preamble, content, tail, headers, fault)


_MODERATION_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening",
                          "illicit", "illicit/violent", "self-harm", "self-harm/instructions",
                          "self-harm/intent", "sexual", "sexual/minors", "violence",
                          "violence/graphic")


async def _moderations(call: Call) -> Response:
    """Never flags anything; one result per input string (or one for a list of parts)."""
    body = call.body
    inp = body.get("input")
    if not isinstance(inp, str | list):
        raise ApiError(400, "input: expected a string or a list", param="input")
    n = len(inp) if isinstance(inp, list) and all(isinstance(i, str) for i in inp) else 1
    result = {"flagged": False,
              "categories": dict.fromkeys(_MODERATION_CATEGORIES, False),
              "category_scores": dict.fromkeys(_MODERATION_CATEGORIES, 0.0),
              "category_applied_input_types": {c: ["text"] for c in _MODERATION_CATEGORIES}}
    return json_response({"id": f"modr-fake{call.request_id.removeprefix('req_fake')}",
                  "model": body.get("model") or "omni-moderation-latest",
                  "results": [result] * n}, headers={"x-request-id": call.request_id})


async def _count_tokens(call: Call) -> Response:
    body = call.body
    requested_model(body)
    system = body.get("system")
    prompt = chat_input_tokens(_messages(body), system if isinstance(system, str | list) else None)
    return json_response({"input_tokens": prompt}, headers={"request-id": call.request_id})


async def _models(call: Call) -> Response:
    if call.flavor == "anthropic":
        data = [{"type": "model", "id": m, "display_name": m.replace("-", " ").title(),
                 "created_at": "2025-01-01T00:00:00Z"} for m in ANTHROPIC_MODELS]
        return json_response({"data": data, "has_more": False, "first_id": data[0]["id"],
                      "last_id": data[-1]["id"]}, headers={"request-id": call.request_id})
    return json_response({"object": "list",
                  "data": [{"id": m, "object": "model", "created": 1_700_000_000,
                            "owned_by": "fake-provider"} for m in OPENAI_MODELS]},
                 headers={"x-request-id": call.request_id})


# ---------------------------------------------------------------------------------------------
# Routing glue


def _endpoint(flavor: Flavor | None, handler: Any, *, has_body: bool = True) -> Any:
    """Wrap a handler: auth + parsing via begin_call, ApiError rendering, status recording.

    flavor None means "decide by the credential header" (GET /v1/models serves both APIs).
    """

    async def endpoint(request: Request) -> Response:
        chosen: Flavor = flavor or (
            "anthropic" if "anthropic-version" in request.headers
            or "x-api-key" in request.headers else "openai")
        try:
            call = await begin_call(request, chosen, has_body=has_body)
        except CallFailed as failed:
            failed.call.record["status"] = failed.error.status
            return failed.error.response(chosen, failed.call.request_id)
        try:
            response: Response = await handler(call)
        except ApiError as error:
            response = error.response(chosen, call.request_id)
        call.record["status"] = response.status_code or None
        return response

    return endpoint


async def _post_fault(request: Request) -> Response:
    state = provider_state(request)
    try:
        body = json.loads(await request.body())
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        mode = body.get("mode")
        count = body.get("count", 1)
        if not isinstance(mode, str):
            raise ValueError("'mode' must be a string")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError("'count' must be an integer >= 1")
        fault = parse_fault(mode)
    except ValueError as exc:
        return json_response({"error": str(exc)}, 400)
    state.faults.append(QueuedFault(fault, count))
    return json_response({"queued": state.queued()})


async def _get_faults(request: Request) -> Response:
    return json_response({"queued": provider_state(request).queued()})


async def _clear_faults(request: Request) -> Response:
    provider_state(request).faults.clear()
    return json_response({"queued": []})


async def _get_requests(request: Request) -> Response:
    return json_response(list(provider_state(request).requests))


async def _clear_requests(request: Request) -> Response:
    requests = provider_state(request).requests
    cleared = len(requests)
    requests.clear()
    return json_response({"cleared": cleared})


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = (f"Invalid URL ({request.method} {request.url.path})" if status in (404, 405)
               else "The server had an error while processing your request.")
    return json_response({"error": {"message": message, "type": "invalid_request_error",
                            "param": None, "code": None}}, status)


class FakeProviderApp(Starlette):
    """Starlette, plus a handle on uvicorn's request cycle so faults can drop connections."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[CYCLE_KEY] = getattr(send, "__self__", None)
        await super().__call__(scope, receive, send)


def create_app(api_key: str = DEFAULT_API_KEY, *,
               default_reply_tokens: int = DEFAULT_REPLY_TOKENS) -> Starlette:
    """Build the fake provider app; it accepts exactly `api_key` on both APIs."""
    if not api_key:
        raise ValueError("api_key must not be empty")
    if default_reply_tokens < 1:
        raise ValueError("default_reply_tokens must be >= 1")
    routes = [
        Route("/v1/chat/completions", _endpoint("openai", _chat_completions), methods=["POST"]),
        Route("/v1/responses", _endpoint("openai", responses_create), methods=["POST"]),
        Route("/v1beta/openai/chat/completions", _endpoint("openai", _chat_completions),
              methods=["POST"]),
        Route("/v1/embeddings", _endpoint("openai", _embeddings), methods=["POST"]),
        Route("/v1/moderations", _endpoint("openai", _moderations), methods=["POST"]),
        Route("/v1/messages", _endpoint("anthropic", _messages_create), methods=["POST"]),
        Route("/v1/messages/count_tokens", _endpoint("anthropic", _count_tokens),
              methods=["POST"]),
        Route("/v1/models", _endpoint(None, _models, has_body=False), methods=["GET"]),
        Route("/_fake/faults", _post_fault, methods=["POST"]),
        Route("/_fake/faults", _get_faults, methods=["GET"]),
        Route("/_fake/faults", _clear_faults, methods=["DELETE"]),
        Route("/_fake/requests", _get_requests, methods=["GET"]),
        Route("/_fake/requests", _clear_requests, methods=["DELETE"]),
    ]
    app = FakeProviderApp(routes=routes,
                          exception_handlers={404: _http_error, 405: _http_error})
    app.state.fake = ProviderState(api_key.encode(), default_reply_tokens)
    return app


# ---------------------------------------------------------------------------------------------
# Serving


def _server(app: Starlette) -> uvicorn.Server:
    config = uvicorn.Config(app, lifespan="off", log_config=None, log_level="warning",
                            access_log=False, timeout_graceful_shutdown=2)
    return uvicorn.Server(config)


@contextlib.contextmanager
def running_fake_provider(api_key: str = DEFAULT_API_KEY, *,
                          default_reply_tokens: int = DEFAULT_REPLY_TOKENS,
                          host: str = "127.0.0.1") -> Iterator[str]:
    """Serve a fresh fake provider from a background thread; yields its base URL."""
    app = create_app(api_key, default_reply_tokens=default_reply_tokens)
    sock = listen(host, 0)
    server = _server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="fake-provider", daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake provider did not start")
            time.sleep(0.002)
        yield url(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fake_provider",
        description="Serve a fake OpenAI/Anthropic-compatible provider for tests and demos.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default=os.environ.get("FAKE_PROVIDER_API_KEY",
                                                            DEFAULT_API_KEY),
                        help="the key clients must send (default: $FAKE_PROVIDER_API_KEY or "
                             f"{DEFAULT_API_KEY})")
    parser.add_argument("--default-reply-tokens", type=int, default=DEFAULT_REPLY_TOKENS)
    args = parser.parse_args(argv)
    try:
        app = create_app(args.api_key, default_reply_tokens=args.default_reply_tokens)
        sock = listen(args.host, args.port)
    except (ValueError, OSError) as exc:
        print(f"fake provider: {exc}", file=sys.stderr)
        return 2
    with sock:
        asyncio.run(serve_announced(_server(app), sock, "fake provider"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
