// The relay's refusals through the npm SDKs (issue 14): a spent budget and a spent token
// quota are each SDK's typed RateLimitError, and neither SDK retries them (the relay sends
// x-should-retry: false). The clients keep their default retries (2); a counting fetch sees
// every request they send.
//
// Started by tests/test_relay_js_clients.py with RELAY_URL and, in the environment:
//   TOKEN_BUDGET  a token whose budget is 0
//   TOKEN_QUOTA   a token with a 10-token daily quota
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';

const RELAY = process.env.RELAY_URL;
const TOKEN_BUDGET = process.env.TOKEN_BUDGET;
const TOKEN_QUOTA = process.env.TOKEN_QUOTA;
assert.ok(RELAY && TOKEN_BUDGET && TOKEN_QUOTA, 'run through tests/test_relay_js_clients.py');

const HELLO = [{ role: 'user', content: 'hello there' }];

/** A fetch that counts the requests an SDK sends. */
function counting() {
  const counter = { n: 0 };
  /** @type {typeof fetch} */
  const fetchFn = (input, init) => {
    counter.n += 1;
    return fetch(input, init);
  };
  return { counter, fetchFn };
}

for (const [reason, token] of [['budget_exceeded', TOKEN_BUDGET], ['quota_exceeded', TOKEN_QUOTA]]) {
  test(`openai-node: ${reason} is a RateLimitError, not retried`, async () => {
    const { counter, fetchFn } = counting();
    const client = new OpenAI({ baseURL: `${RELAY}/v1`, apiKey: token, fetch: fetchFn });
    const err = await client.chat.completions
      .create({ model: 'relay-test', messages: HELLO, max_tokens: 16 })
      .then(() => null, (e) => e);
    assert.ok(err instanceof OpenAI.RateLimitError, String(err));
    assert.equal(err.status, 429);
    assert.equal(err.error?.reason, reason);
    if (reason === 'budget_exceeded') assert.equal(err.code, 'insufficient_quota');
    assert.equal(counter.n, 1);
  });

  test(`@anthropic-ai/sdk: ${reason} is a RateLimitError, not retried`, async () => {
    const { counter, fetchFn } = counting();
    const client = new Anthropic({ baseURL: RELAY, apiKey: token, fetch: fetchFn });
    const err = await client.messages
      .create({ model: 'claude-test', messages: HELLO, max_tokens: 16 })
      .then(() => null, (e) => e);
    assert.ok(err instanceof Anthropic.RateLimitError, String(err));
    assert.equal(err.status, 429);
    assert.equal(err.error?.error?.reason, reason);
    assert.equal(counter.n, 1);
  });
}
