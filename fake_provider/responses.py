"""The fake provider's OpenAI Responses API: POST /v1/responses, plain and streamed.

Close enough to the real API that the official `openai` SDKs (``responses.create``,
``responses.stream``), the OpenAI Agents SDK and the Vercel AI SDK accept its answers.

Token counts (deterministic, as in fake_provider.tokens)
    input      = 3 + (4 + text(instructions) if instructions) + per input item:
                 a string input is one message; a message item 4 + content(content) (input_image
                 parts count 85); a function_call 4 + text(name) + text(arguments); a
                 function_call_output 4 + text(output); any other item 4;
                 + WEB_SEARCH_CONTENT_TOKENS per web search call made
    reasoning  = REASONING_TOKENS for a reasoning model (o*, gpt-5*), else 0
    output     = reasoning + visible, at most max_output_tokens (visible = default reply tokens,
                 or what is left of the cap after reasoning); a cut reply has status
                 "incomplete" with incomplete_details.reason "max_output_tokens"
    usage      = {input_tokens, input_tokens_details.cached_tokens (0), output_tokens
                 (reasoning included, as OpenAI counts it), output_tokens_details.reasoning_tokens,
                 total_tokens}

Behaviour
    * function tools: when the request declares a function tool, tool_choice is not "none" and
      the input holds no function_call_output yet, the answer is one function_call of the first
      function tool, with arguments filled from its schema's required properties; otherwise a
      text message.
    * web_search / web_search_preview tools: one web_search_call item before the message.
    * stream: response.created, response.in_progress, the items' added / delta / done events,
      then response.completed (or response.incomplete) carrying the whole response and usage;
      every event has `event:` and a sequence_number. Faults as in fake_provider.server
      (stream_cut counts the text deltas).
    * previous_response_id and conversation are accepted and add PREVIOUS_CONTEXT_TOKENS of
      hidden input (the relay must never let that through unbounded).
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.responses import Response

from fake_provider.calls import (
    ApiError,
    Call,
    EventStream,
    apply_fault,
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
from fake_provider.tokens import (
    MESSAGE_OVERHEAD_TOKENS,
    REQUEST_OVERHEAD_TOKENS,
    content_tokens,
    reply_pieces,
    reply_text,
    text_tokens,
)

REASONING_TOKENS = 8
WEB_SEARCH_CONTENT_TOKENS = 100
PREVIOUS_CONTEXT_TOKENS = 5000
MIN_OUTPUT_TOKENS = 16  # OpenAI refuses a smaller max_output_tokens


def is_reasoning_model(model: str) -> bool:
    return model.startswith(("o1", "o3", "o4", "gpt-5"))


def responses_input_tokens(body: dict[str, Any]) -> int:
    """Input tokens of a Responses request by the formula in the module docstring."""
    total = REQUEST_OVERHEAD_TOKENS
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        total += MESSAGE_OVERHEAD_TOKENS + text_tokens(instructions)
    items = body.get("input")
    if isinstance(items, str):
        return total + MESSAGE_OVERHEAD_TOKENS + text_tokens(items)
    for item in items if isinstance(items, list) else ():
        total += MESSAGE_OVERHEAD_TOKENS
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message":
            total += content_tokens(item.get("content"))
        elif kind == "function_call":
            total += text_tokens(str(item.get("name", ""))) + text_tokens(
                str(item.get("arguments", "")))
        elif kind == "function_call_output":
            out = item.get("output")
            total += text_tokens(out) if isinstance(out, str) else content_tokens(out)
    if body.get("previous_response_id") or body.get("conversation"):
        total += PREVIOUS_CONTEXT_TOKENS
    return total


def _sample(schema: Any) -> Any:
    kind = schema.get("type") if isinstance(schema, dict) else None
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: _sample(props.get(k)) for k in schema.get("required") or ()}
    return {"integer": 1, "number": 1, "boolean": True, "array": [], "null": None}.get(
        str(kind), "alpha")


def _function_to_call(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = body.get("tools")
    if not isinstance(tools, list) or body.get("tool_choice") == "none":
        return None
    items = body.get("input")
    if isinstance(items, list) and any(isinstance(i, dict) and i.get("type") ==
                                       "function_call_output" for i in items):
        return None
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type") == "function":
            return tool
    return None


def _searches(body: dict[str, Any]) -> int:
    tools = body.get("tools")
    return int(isinstance(tools, list) and any(
        isinstance(t, dict) and str(t.get("type", "")).startswith("web_search") for t in tools))


async def responses_create(call: Call) -> Response:
    body = call.body
    model, model_fault = requested_model(body)
    inp = body.get("input")
    if not isinstance(inp, str | list):
        raise ApiError(400, "input: expected a string or a list of input items", param="input")
    cap = int_field(body, "max_output_tokens", low=MIN_OUTPUT_TOKENS)
    stream = stream_flag(body)
    if body.get("background") is True and not body.get("store", True):
        raise ApiError(400, "background mode requires store=true", param="background")

    early = await apply_fault(call, model_fault)
    if early is not None:
        return early
    fault = call.fault
    state = provider_state(call.request)
    searches = _searches(body)
    tokens_in = responses_input_tokens(body) + searches * WEB_SEARCH_CONTENT_TOKENS
    reasoning = REASONING_TOKENS if is_reasoning_model(model) else 0
    visible = state.default_reply_tokens
    if fault is not None and fault.kind == "long":
        visible, reasoning = fault.arg, 0
    incomplete = False
    if cap is not None and reasoning + visible > cap and fault_kind(fault) != "long":
        incomplete = True
        reasoning = min(reasoning, cap)
        visible = cap - reasoning
    seq = call.request_id.removeprefix("req_fake")
    tool = _function_to_call(body)
    items: list[dict[str, Any]] = []
    if reasoning:
        items.append({"type": "reasoning", "id": f"rs_fake{seq}", "summary": []})
    for i in range(searches):
        items.append({"type": "web_search_call", "id": f"ws_fake{seq}_{i}",
                      "status": "completed", "action": {"type": "search", "query": "alpha"}})
    text = reply_text(visible)
    if tool is not None:
        arguments = json.dumps(_sample(tool.get("parameters")), separators=(",", ":"))
        items.append({"type": "function_call", "id": f"fc_fake{seq}", "call_id": f"call_{seq}",
                      "name": tool.get("name"), "arguments": arguments, "status": "completed"})
    else:
        items.append({"type": "message", "id": f"msg_fake{seq}", "status":
                      "incomplete" if incomplete else "completed", "role": "assistant",
                      "content": [{"type": "output_text", "text": text, "annotations": [],
                                   "logprobs": []}]})
    output_tokens = reasoning + visible
    usage = {"input_tokens": tokens_in, "input_tokens_details": {"cached_tokens": 0},
             "output_tokens": output_tokens,
             "output_tokens_details": {"reasoning_tokens": reasoning},
             "total_tokens": tokens_in + output_tokens}
    response: dict[str, Any] = {
        "id": f"resp_fake{seq}", "object": "response", "created_at": int(time.time()),
        "status": "incomplete" if incomplete else "completed", "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": body.get("instructions"), "max_output_tokens": cap,
        "max_tool_calls": body.get("max_tool_calls"), "model": model, "output": items,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": "medium" if reasoning else None, "summary": None},
        "service_tier": "default", "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0), "truncation": body.get("truncation", "disabled"),
        "usage": usage, "user": None, "metadata": body.get("metadata") or {},
    }
    headers = {"x-request-id": call.request_id}
    if fault_kind(fault) == "no_usage":
        response["usage"] = None
    elif fault_kind(fault) == "no_output_count":
        del usage["output_tokens"], usage["total_tokens"]
    if not stream:
        if fault_kind(fault) == "malformed":
            return malformed_body(response)
        return json_response(response, headers=headers)
    return _stream(response, items, text, visible, headers, call)


def _stream(response: dict[str, Any], items: list[dict[str, Any]], text: str, visible: int,
            headers: dict[str, str], call: Call) -> Response:
    fault = call.fault
    counter = iter(range(1_000_000))

    def event(kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": next(counter), **fields}
        return f"event: {kind}\n".encode() + b"data: " + dumps(data) + b"\n\n"

    start = {**response, "status": "in_progress", "output": [], "usage": None,
             "incomplete_details": None}
    preamble = [event("response.created", response=start),
                event("response.in_progress", response=start)]
    content: list[bytes] = []
    tail: list[bytes] = []
    for index, item in enumerate(items):
        if item["type"] == "message":
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            preamble += [
                event("response.output_item.added", output_index=index,
                      item={**item, "status": "in_progress", "content": []}),
                event("response.content_part.added", item_id=item["id"], output_index=index,
                      content_index=0, part=part)]
            if fault_kind(fault) == "malformed":
                broken = event("response.output_text.delta", item_id=item["id"],
                               output_index=index, content_index=0, delta="alpha", logprobs=[])
                return EventStream(preamble, [broken[: len(broken) // 2] + b"\n\n"], [],
                                    headers=headers)
            content += [event("response.output_text.delta", item_id=item["id"],
                              output_index=index, content_index=0, delta=piece, logprobs=[])
                        for piece in reply_pieces(visible)]
            tail += [
                event("response.output_text.done", item_id=item["id"], output_index=index,
                      content_index=0, text=text, logprobs=[]),
                event("response.content_part.done", item_id=item["id"], output_index=index,
                      content_index=0, part={**part, "text": text}),
                event("response.output_item.done", output_index=index, item=item)]
        elif item["type"] == "function_call":
            preamble += [
                event("response.output_item.added", output_index=index,
                      item={**item, "arguments": "", "status": "in_progress"}),
                event("response.function_call_arguments.delta", item_id=item["id"],
                      output_index=index, delta=item["arguments"]),
                event("response.function_call_arguments.done", item_id=item["id"],
                      output_index=index, arguments=item["arguments"]),
                event("response.output_item.done", output_index=index, item=item)]
        else:
            preamble += [event("response.output_item.added", output_index=index, item=item),
                         event("response.output_item.done", output_index=index, item=item)]
    final = "response.incomplete" if response["status"] == "incomplete" else (
        "response.completed")
    tail.append(event(final, response=response))
    return stream_response(preamble, content, tail, headers, fault)
