// npm clients against a running relay: openai-node (Responses API, plain and streamed), the
// Vercel AI SDK (openai(model) uses the Responses API; @ai-sdk/anthropic sends
// max_tokens=64000 by default) and @anthropic-ai/sdk (messages.countTokens).
//
// Started by tests/test_relay_js_clients.py, which runs a real relay in front of the fake
// provider and passes RELAY_URL and tokens in the environment:
//   TOKEN      a budget token
//   TOKEN_CAP  a token with max-output-tokens 12
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { generateText, streamText } from 'ai';
import { createOpenAI } from '@ai-sdk/openai';
import { createAnthropic } from '@ai-sdk/anthropic';

const RELAY = process.env.RELAY_URL;
const TOKEN = process.env.TOKEN;
const TOKEN_CAP = process.env.TOKEN_CAP;
assert.ok(RELAY && TOKEN && TOKEN_CAP, 'run through tests/test_relay_js_clients.py');

/** @param {string} text */
const words = (text) => text.trim().split(/\s+/);

test('openai-node responses.create', async () => {
  const client = new OpenAI({ baseURL: `${RELAY}/v1`, apiKey: TOKEN, maxRetries: 0 });
  const r = await client.responses.create({ model: 'relay-test', input: 'hello there' });
  assert.deepEqual(words(r.output_text).slice(0, 2), ['alpha', 'bravo']);
  assert.equal(r.usage?.input_tokens, 10);
  assert.equal(r.usage?.output_tokens, 16);
});

test('openai-node responses.stream, with the provider request id', async () => {
  const client = new OpenAI({ baseURL: `${RELAY}/v1`, apiKey: TOKEN, maxRetries: 0 });
  const stream = client.responses.stream({ model: 'gpt-5-test', input: 'hello there' });
  let deltas = 0;
  for await (const event of stream) {
    if (event.type === 'response.output_text.delta') deltas += 1;
  }
  const final = await stream.finalResponse();
  assert.equal(deltas, 16);
  assert.equal(final.usage?.output_tokens_details.reasoning_tokens, 8);
  const { response } = await client.responses
    .create({ model: 'relay-test', input: 'hello there', stream: true })
    .withResponse();
  assert.match(response.headers.get('x-request-id') ?? '', /^req_fake/);
});

test('Vercel ai SDK: openai(model) generateText and streamText', async () => {
  const openai = createOpenAI({ baseURL: `${RELAY}/v1`, apiKey: TOKEN });
  const r = await generateText({ model: openai('relay-test'), prompt: 'hello there' });
  assert.deepEqual(words(r.text).slice(0, 2), ['alpha', 'bravo']);
  assert.equal(r.usage.outputTokens, 16);
  const s = streamText({ model: openai('gpt-5-test'), prompt: 'hello there' });
  let text = '';
  for await (const piece of s.textStream) text += piece;
  assert.equal(words(text).length, 16);
  assert.equal((await s.usage).outputTokens, 24); // 8 reasoning + 16 visible
});

test('@ai-sdk/anthropic default max_tokens is lowered to the token cap', async () => {
  const anthropic = createAnthropic({ baseURL: `${RELAY}/v1`, apiKey: TOKEN_CAP });
  const r = await generateText({ model: anthropic('claude-sonnet-4-5'), prompt: 'hello there' });
  assert.equal(words(r.text).length, 12);
  assert.equal(r.finishReason, 'length');
  assert.match(r.response.headers?.['x-capwallet-output-cap'] ?? '', /applied=12/);
});

test('@anthropic-ai/sdk messages.countTokens', async () => {
  const client = new Anthropic({ baseURL: RELAY, apiKey: TOKEN, maxRetries: 0 });
  const r = await client.messages.countTokens({
    model: 'claude-sonnet-4-5', messages: [{ role: 'user', content: 'hello there' }],
  });
  assert.equal(r.input_tokens, 10);
});
