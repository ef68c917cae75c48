// Approvals: a human's single-use, short-lived yes to one exact request
// (spec/approvals.md#request-digest, #approval-format, #checking-an-approval).
//
// (spec/approvals.md#kinds, #access-digest). An approval states what it approves, a model call
// or a resource access, and is accepted only for a request of that kind.
//
//   "cwa1_" base64url(114 bytes), at most 200 characters
//   offset size field
//   0      1    version 0x01
//   1      1    kind: 0x01 model call, 0x02 resource access
//   2      8    root key id            (must be the token's own root key)
//   10     16   approval id            (the decision names it; the store consumes it once)
//   26     16   token id
//   42     32   digest                 (request digest, or access digest for a resource access)
//   74     8    expires (u64 BE, <= 2^53-1; valid while now < expires)
//   82     32   HMAC-SHA256(approval key, bytes 0..81)
//   approval key   = HMAC-SHA256(root key, "capwallet-approval-v1")
//   request digest = SHA-256("capwallet-request-v1" 0x00 METHOD 0x00 path 0x00 body)
//   access digest  = SHA-256("capwallet-access-v1" 0x00 sorted,unique,scopes 0x00 summary 0x00
//                            request digest)

import { TokenError } from './reasons.js';
import { hmacSha256, sha256 } from './macaroon.js';
import {
  b64urlDecodeStrict, b64urlEncode, concat, constantTimeEqual, readUint64Safe, writeUint64, hex, utf8,
} from './encoding.js';

export const PREFIX = 'cwa1_';
const MAX_CHARS = 200;
const BODY_BYTES = 82;
const APPROVAL_BYTES = BODY_BYTES + 32;
const KEY_LABEL = utf8('capwallet-approval-v1');

/** The digest binding an approval to one request; the method must be ASCII. */
export async function requestDigest(method, path, body) {
  if (!/^[\x00-\x7f]*$/.test(method)) throw new TypeError('the HTTP method must be ASCII');
  const upper = method.replace(/[a-z]/g, (c) => c.toUpperCase()); // a-z only, nothing else
  return sha256(concat(utf8('capwallet-request-v1\0'), utf8(`${upper}\0${path}\0`), body));
}

/** Approval kinds: their byte and their JSON name. */
export const KINDS = Object.freeze({ model_call: 1, resource_access: 2 });
const KIND_NAMES = new Map(Object.entries(KINDS).map(([name, byte]) => [byte, name]));

/**
 * The digest of what the user saw for a resource access: its scopes (deduplicated and sorted,
 * joined with ","), the summary shown and the 32-byte request digest of the resource server's
 * own request.
 * @param {string[]} scopes @param {string} summary @param {Uint8Array} request
 * @returns {Promise<Uint8Array>}
 */
export async function accessDigest(scopes, summary, request) {
  const names = [...new Set(scopes)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  if (names.length === 0 || names.some((n) => !/^[\x01-\x7f]*$/.test(n) || n.includes(','))) {
    throw new TypeError('scopes must be ASCII scope names');
  }
  if (request.length !== 32) throw new TypeError('the request digest must be 32 bytes');
  return sha256(concat(utf8('capwallet-access-v1\0'), utf8(`${names.join(',')}\0`), utf8(`${summary}\0`), request));
}

export function approvalKey(rootKey) {
  return hmacSha256(rootKey, KEY_LABEL);
}

function body({ kind, keyId, approvalId, tokenId, digest, expires }) {
  const byte = KINDS[kind];
  if (byte === undefined) throw new TypeError(`unknown approval kind ${kind}`);
  return concat([1, byte], keyId, approvalId, tokenId, digest, writeUint64(expires));
}

/**
 * Issue an approval string (what a wallet does; here for the mint-side vectors). `kind` is
 * 'model_call' or 'resource_access'.
 */
export async function issueApproval({ kind, rootKey, keyId, approvalId, tokenId, digest, expires }) {
  const b = body({ kind, keyId, approvalId, tokenId, digest, expires });
  return PREFIX + b64urlEncode(concat(b, await hmacSha256(await approvalKey(rootKey), b)));
}

const bad = (message) => new TokenError('approval_invalid', message);

export function parseApproval(text) {
  if (typeof text !== 'string' || !text.startsWith(PREFIX) || text.length > MAX_CHARS) {
    throw bad(`approval does not start with ${PREFIX}`);
  }
  const data = b64urlDecodeStrict(text.slice(PREFIX.length));
  if (data === null) throw bad('approval is not canonical base64url');
  if (data.length !== APPROVAL_BYTES || data[0] !== 1) throw bad('approval has the wrong length or version');
  const kind = KIND_NAMES.get(data[1]);
  if (kind === undefined) throw bad('approval states an unknown kind');
  const expires = readUint64Safe(data, 74);
  if (expires === null) throw bad('approval expiry is out of range');
  return {
    kind, keyId: data.subarray(2, 10), approvalId: data.subarray(10, 26), tokenId: data.subarray(26, 42),
    digest: data.subarray(42, 74), expires, body: data.subarray(0, BODY_BYTES), mac: data.subarray(BODY_BYTES),
  };
}

const same = constantTimeEqual;

/**
 * Check an approval for this token (its id and root key id), this request kind
 * ('model_call' or 'resource_access') and this request digest at `now`; returns the approval id (hex) to consume, or throws TokenError('approval_invalid').
 * `keys` maps key id (hex) to root key bytes.
 */
export async function checkApproval(text, keys, { tokenId, tokenKeyId, digest, now, kind }) {
  const a = parseApproval(text);
  if (!same(a.keyId, tokenKeyId)) throw bad('approval was made under another root key than the token');
  const rootKey = keys.get(hex(a.keyId));
  if (rootKey === undefined) throw bad('approval was made under an unknown root key');
  if (!same(await hmacSha256(await approvalKey(rootKey), a.body), a.mac)) throw bad('approval signature does not match');
  if (!same(a.tokenId, tokenId)) throw bad('approval was issued for another token');
  if (a.kind !== kind) throw bad(`approval is for a ${a.kind.replace('_', ' ')}, not a ${kind.replace('_', ' ')}`);
  if (digest === null || !same(a.digest, digest)) throw bad('approval was issued for a different request');
  if (now >= a.expires) throw bad('approval has expired');
  return hex(a.approvalId);
}
