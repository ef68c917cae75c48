"""Python frameworks on top of the openai SDK, through the relay with their defaults:
langchain-openai (Chat Completions with a large max_tokens, and use_responses_api) and
litellm.responses."""

from __future__ import annotations

import os

from relay_harness import Relay, fake_requests

from capwallet import caveats as cav


def test_chat_openai_max_tokens_1000_under_a_300_token_grant(relay: Relay) -> None:
    from langchain_openai import ChatOpenAI

    tok = relay.mint(cav.MaxOutputTokens(300))
    # pydantic model: its typed __init__ wants api_key as a SecretStr (a str is converted) and
    # names max_tokens by its alias, max_completion_tokens; mypy refuses what users write.
    llm = ChatOpenAI(model="relay-nolimit", api_key=tok, base_url=relay.url + "/v1",  # type: ignore[arg-type]
                     max_tokens=1000, max_retries=0)  # type: ignore[call-arg]
    out = llm.invoke("hello there")
    assert str(out.content).split()[:2] == ["alpha", "bravo"]
    assert fake_requests(relay)[-1]["body"]["max_completion_tokens"] == 300


def test_chat_openai_use_responses_api(relay: Relay) -> None:
    from langchain_openai import ChatOpenAI

    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    # api_key: a str, converted to the SecretStr the pydantic field is typed with
    llm = ChatOpenAI(model="gpt-5-test", api_key=tok, base_url=relay.url + "/v1",  # type: ignore[arg-type]
                     use_responses_api=True, max_retries=0)
    out = llm.invoke("hello there")
    assert out.text.split()[:2] == ["alpha", "bravo"]
    assert fake_requests(relay)[-1]["path"] == "/v1/responses"
    assert out.usage_metadata is not None and out.usage_metadata["output_tokens"] == 24
    [row] = relay.ledger(tok)
    assert (row.status, row.output_tokens) == ("ok", 24)


def test_litellm_responses(relay: Relay) -> None:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # no fetch of its price list
    import litellm

    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    r = litellm.responses(model="openai/relay-test", input="hello there", api_key=tok,
                          api_base=relay.url + "/v1", num_retries=0)
    # litellm types an output item as any of ~35 classes (or a dict); this reply's is a message.
    text = r.output[-1].content[0].text  # type: ignore[union-attr,index]
    assert isinstance(text, str) and text.split()[:2] == ["alpha", "bravo"]
    assert fake_requests(relay)[-1]["path"] == "/v1/responses"
    [row] = relay.ledger(tok)
    assert (row.status, row.input_tokens, row.output_tokens) == ("ok", 10, 16)
