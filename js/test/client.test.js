// The client helpers that run outside a page: PKCE, discovery, the code exchange's errors,
// the SDK options (fed to the real openai and @anthropic-ai/sdk packages), approval parsing.
// The browser flow itself (popup, redirect, CORS) is tested in Chromium: tests/test_web_app.py.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import {
  pkcePair, randomToken, discover, exchangeCode, openaiOptions, anthropicOptions, approvalRequest,
  WalletUnreachableError, OAuthError, CapwalletError, AccessDeniedError, StateMismatchError,
  PopupClosedError, TimeoutError,
} from '../src/index.js';

test('PKCE: S256 of the verifier, base64url, fresh every time', async () => {
  const a = await pkcePair();
  const b = await pkcePair();
  assert.match(a.verifier, /^[A-Za-z0-9_-]{43}$/);
  assert.equal(a.challenge, createHash('sha256').update(a.verifier).digest('base64url'));
  assert.notEqual(a.verifier, b.verifier);
  assert.match(randomToken(24), /^[A-Za-z0-9_-]{32}$/);
});

/** A loopback HTTP server answering `routes[path]` = [status, json]; 404 otherwise. */
async function serve(routes) {
  const seen = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      seen.push({ method: req.method, url: req.url, body, headers: req.headers });
      const hit = routes(req.url, server.address().port);
      res.writeHead(hit ? hit[0] : 404, { 'content-type': 'application/json' });
      res.end(JSON.stringify(hit ? hit[1] : { error: 'not_found' }));
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${server.address().port}`;
  return { url, seen, close: () => new Promise((r) => server.close(r)) };
}

test('discovery: wallet metadata, a relay naming its wallet, and an issuer that does not match', async () => {
  const wallet = await serve((path, port) => (path === '/.well-known/oauth-authorization-server' ? [200, {
    issuer: `http://127.0.0.1:${port}`, authorization_endpoint: `http://127.0.0.1:${port}/authorize`,
    token_endpoint: `http://127.0.0.1:${port}/token`,
  }] : null));
  const relay = await serve((path, port) => (path === '/.well-known/oauth-protected-resource'
    ? [200, { resource: `http://127.0.0.1:${port}`, authorization_servers: [wallet.url] }] : null));
  const liar = await serve((path) => (path === '/.well-known/oauth-authorization-server'
    ? [200, { issuer: 'https://evil.example', authorization_endpoint: 'x', token_endpoint: 'y' }] : null));
  try {
    const w = await discover(`${wallet.url}/`);
    assert.equal(w.issuer, wallet.url);
    assert.equal(w.tokenEndpoint, `${wallet.url}/token`);
    const r = await discover(relay.url);
    assert.equal(r.issuer, wallet.url);
    assert.equal(r.authorizationEndpoint, `${wallet.url}/authorize`);
    assert.equal(r.relayUrl, relay.url);
    await assert.rejects(discover(liar.url), (err) => err instanceof WalletUnreachableError && /issuer/.test(err.message));
  } finally {
    await Promise.all([wallet.close(), relay.close(), liar.close()]);
  }
});

test('an unreachable wallet is a typed error naming the URL tried', async () => {
  const s = await serve(() => null);
  await s.close(); // nothing listens on this port now
  await assert.rejects(discover(s.url), (err) => {
    assert.ok(err instanceof WalletUnreachableError && err instanceof CapwalletError);
    assert.equal(err.code, 'wallet_unreachable');
    assert.equal(err.url, `${s.url}/.well-known/oauth-authorization-server`);
    assert.ok(err.message.includes(s.url));
    return true;
  });
  await assert.rejects(discover('ftp://x'), { code: 'wallet_unreachable' });
});

test('the code exchange posts the verifier, and a refused code is an OAuthError with the code', async () => {
  const s = await serve((path) => (path === '/token'
    ? [400, { error: 'invalid_grant', error_description: 'the code was already used' }] : null));
  try {
    await assert.rejects(exchangeCode({
      tokenEndpoint: `${s.url}/token`, issuer: s.url, code: 'c0de', verifier: 'v'.repeat(43), redirectUri: 'http://127.0.0.1:1/cb',
    }), (err) => err instanceof OAuthError && err.code === 'invalid_grant' && /already used/.test(err.message));
    const form = new URLSearchParams(s.seen.at(-1).body);
    assert.equal(form.get('grant_type'), 'authorization_code');
    assert.equal(form.get('code_verifier'), 'v'.repeat(43));
    assert.equal(form.get('redirect_uri'), 'http://127.0.0.1:1/cb');
  } finally {
    await s.close();
  }
});

test('error classes carry stable codes', () => {
  assert.equal(new AccessDeniedError().code, 'access_denied');
  assert.equal(new StateMismatchError().code, 'state_mismatch');
  assert.equal(new PopupClosedError().code, 'popup_closed');
  assert.equal(new TimeoutError().code, 'timeout');
  assert.equal(new TimeoutError().name, 'TimeoutError');
});

test('SDK options: the official clients accept them and call the relay with the token', async () => {
  const s = await serve(() => [403, { error: { message: 'needs a yes', type: 'permission_error', code: 'confirmation_required', approval_request_id: 'ab'.repeat(16), approval_url: 'http://127.0.0.1:9/approvals/x' } }]);
  const conn = { token: 'cwt1_test', relayUrl: `${s.url}/`, walletUrl: s.url };
  try {
    const openai = new OpenAI({ ...openaiOptions(conn), maxRetries: 0 });
    assert.equal(openai.baseURL, `${s.url}/v1`);
    const err = await openai.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }).catch((e) => e);
    assert.equal(err.status, 403);
    assert.deepEqual(approvalRequest(err), { requestId: 'ab'.repeat(16), approvalUrl: 'http://127.0.0.1:9/approvals/x', message: 'needs a yes' });
    assert.equal(s.seen.at(-1).url, '/v1/chat/completions');
    const anthropic = new Anthropic({ ...anthropicOptions(conn), maxRetries: 0 });
    const aerr = await anthropic.messages.create({ model: 'm', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] }).catch((e) => e);
    assert.equal(aerr.status, 403);
    assert.equal(s.seen.at(-1).url, '/v1/messages');
    // The token is the key; the SDK marks the call as a browser's, which the relay's CORS allows.
    assert.equal(s.seen.at(-1).headers.authorization, 'Bearer cwt1_test'); // @anthropic-ai/sdk 1.x
    assert.equal(s.seen.at(-1).headers['anthropic-dangerous-direct-browser-access'], 'true');
    assert.equal(s.seen.at(-2).headers.authorization, 'Bearer cwt1_test');
    assert.equal(approvalRequest(new Error('other')), null);
    assert.equal(approvalRequest({ error: { code: 'budget_exceeded' } }), null);
  } finally {
    await s.close();
  }
});
