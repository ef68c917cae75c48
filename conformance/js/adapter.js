#!/usr/bin/env node
// The JavaScript implementation behind the conformance adapter protocol, version 1
// (spec/conformance.md): one JSON request per line on standard input, one JSON response per
// line on standard output, in order. Run: node conformance/js/adapter.js
//
// Every request carries all its inputs (keys, token, time, request, counters), so the
// adapter holds no state between lines.

import { createInterface } from 'node:readline';
import { verify } from '../../js/src/token/verify.js';
import { describe, mint, attenuate } from '../../js/src/token/token.js';
import { deriveKey, chainSteps, chainId } from '../../js/src/token/macaroon.js';
import { accessDigest, requestDigest, issueApproval } from '../../js/src/token/approval.js';
import { limitsToJson } from '../../js/src/token/limits.js';
import { TokenError } from '../../js/src/token/reasons.js';
import { fromHex, hex } from '../../js/src/token/encoding.js';

const PROTOCOL = 1;
const IMPLEMENTATION = { name: 'capwallet-js', version: '1.2.0', language: 'JavaScript, Node.js 20+' };

class BadRequest extends Error {}

function field(req, name, type) {
  const value = req[name];
  const ok = type === 'array' ? Array.isArray(value)
    : type === 'object' ? value !== null && typeof value === 'object' && !Array.isArray(value)
    : type === 'integer' ? Number.isSafeInteger(value) && value >= 0
    : typeof value === type;
  if (!ok) throw new BadRequest(`field ${name} must be ${type === 'integer' ? 'a non-negative integer' : `a ${type}`}`);
  return value;
}

function bytes(req, name) {
  const text = field(req, name, 'string');
  if (!/^(?:[0-9a-f]{2})*$/.test(text)) throw new BadRequest(`field ${name} must be lowercase hex`);
  return fromHex(text);
}

function keyring(list) {
  return new Map(list.map((k) => [field(k, 'key_id', 'string'), fromHex(field(k, 'root_key', 'string'))]));
}

function request(r) {
  field(r, 'kind', 'string');
  if (r.kind !== 'model_call' && r.kind !== 'resource_access') throw new BadRequest('request.kind is model_call or resource_access');
  const call = r.kind === 'model_call';
  if (call) for (const f of ['provider', 'model', 'operation']) field(r, f, 'string');
  return {
    provider: call ? r.provider : null, model: call ? r.model : null, operation: call ? r.operation : null,
    scopes: field(r, 'scopes', 'array'), input_tokens: field(r, 'input_tokens', 'integer'),
    output_tokens: field(r, 'output_tokens', 'integer'), cost: field(r, 'cost', 'object'),
    zero_retention: field(r, 'zero_retention', 'boolean'), approval: r.approval ?? null,
    digest: r.digest == null ? null : bytes(r, 'digest'),
    origin: r.origin == null ? null : field(r, 'origin', 'string'),
  };
}

const OPS = {
  hello(req) {
    if (req.protocol !== PROTOCOL) throw new BadRequest(`this adapter speaks protocol ${PROTOCOL}`);
    return { protocol: PROTOCOL, implementation: IMPLEMENTATION, ops: Object.keys(OPS) };
  },
  async verify(req) {
    const d = await verify(
      field(req, 'token', 'string'), keyring(field(req, 'keys', 'array')),
      request(field(req, 'request', 'object')), field(req, 'now', 'integer'),
      field(req, 'counters', 'object'), field(req, 'revoked', 'array'),
    );
    return { ...d, limits: d.limits === null ? null : limitsToJson(d.limits) };
  },
  parse(req) {
    try {
      return { ok: true, ...describe(field(req, 'token', 'string')) };
    } catch (err) {
      if (err instanceof TokenError) return { ok: false, reason: err.reason, message: err.message };
      throw err;
    }
  },
  async mint(req) {
    const rootKey = bytes(req, 'root_key');
    const caveats = field(req, 'caveats', 'array').map((_, i) => bytes(req.caveats, i));
    const token = await mint({
      rootKey, keyId: bytes(req, 'key_id'), tokenId: bytes(req, 'token_id'),
      issuedAt: field(req, 'issued_at', 'integer'), caveats,
    });
    const identifier = fromHex(describe(token).identifier.hex);
    const steps = await chainSteps(rootKey, identifier, caveats);
    return { token, derived_key: hex(await deriveKey(rootKey)), chain: steps.map(hex) };
  },
  async attenuate(req) {
    const caveats = field(req, 'caveats', 'array').map((_, i) => bytes(req.caveats, i));
    const token = await attenuate(field(req, 'token', 'string'), caveats);
    return { token, chain_id: await chainId(fromHex(describe(token).signature)) };
  },
  async request_digest(req) {
    const digest = await requestDigest(field(req, 'method', 'string'), field(req, 'path', 'string'), bytes(req, 'body_hex'));
    return { digest: hex(digest) };
  },
  async access_digest(req) {
    const scopes = field(req, 'scopes', 'array');
    if (!scopes.every((x) => typeof x === 'string')) throw new TypeError('scopes must be strings');
    const digest = await accessDigest(scopes, field(req, 'summary', 'string'), bytes(req, 'request'));
    return { digest: hex(digest) };
  },
  async issue_approval(req) {
    return {
      approval: await issueApproval({
        kind: field(req, 'kind', 'string'), rootKey: bytes(req, 'root_key'), keyId: bytes(req, 'key_id'), approvalId: bytes(req, 'approval_id'),
        tokenId: bytes(req, 'token_id'), digest: bytes(req, 'digest'), expires: field(req, 'expires', 'integer'),
      }),
    };
  },
};

async function handle(line) {
  let req;
  try {
    req = JSON.parse(line);
  } catch {
    return { id: null, error: { message: 'request is not JSON' } };
  }
  const id = req?.id ?? null;
  try {
    if (req === null || typeof req !== 'object' || !Object.hasOwn(OPS, req.op)) {
      throw new BadRequest(`unknown op ${JSON.stringify(req?.op)}`);
    }
    return { id, result: await OPS[req.op](req) };
  } catch (err) {
    return { id, error: { message: err instanceof BadRequest ? err.message : `${err.name}: ${err.message}` } };
  }
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (line.trim() === '') continue;
  process.stdout.write(`${JSON.stringify(await handle(line))}\n`);
}
