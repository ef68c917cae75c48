// A sub-task token made in JavaScript (the npm package's attenuate(), offline) and its parent,
// both through openai-node against a running relay. Started by
// tests/test_relay_js_clients.py, which passes RELAY_URL and TOKEN (a budget token) in the
// environment and then checks that the relay's ledger tells the two chains apart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { attenuate, Budget, Models } from '../../js/src/index.js';

const RELAY = process.env.RELAY_URL;
const TOKEN = process.env.TOKEN;
assert.ok(RELAY && TOKEN, 'run through tests/test_relay_js_clients.py');

/** @param {string} apiKey */
const client = (apiKey) => new OpenAI({ baseURL: `${RELAY}/v1`, apiKey, maxRetries: 0 });
const ask = { messages: [{ role: 'user', content: 'hello there' }], max_tokens: 16 };

test('a sub-task token attenuated in JS calls beside its parent, and only within its caveats',
  async () => {
    const child = await attenuate(TOKEN, [Models(['relay-test']), Budget(2000, 'USD', 'total')]);
    assert.notEqual(child, TOKEN);
    for (const token of [TOKEN, child]) {
      const r = await client(token).chat.completions.create({ model: 'relay-test', ...ask });
      assert.ok(r.choices[0].message.content);
    }
    // The parent may use gpt-5-test; the sub-task may not.
    await client(TOKEN).chat.completions.create({ model: 'gpt-5-test', ...ask });
    await assert.rejects(client(child).chat.completions.create({ model: 'gpt-5-test', ...ask }),
      (err) => err instanceof OpenAI.PermissionDeniedError);
  });
