// Approvals: a human's single-use, short-lived yes to one exact request
// (spec/approvals.md#request-digest, #approval-format, #checking-an-approval).
//
//   "cwa1_" base64url(113 bytes), at most 200 characters
//   offset size field
//   0      1    version 0x01
//   1      8    root key id            (must be the token's own root key)
//   9      16   approval id            (the decision names it; the store consumes it once)
//   25     16   token id
//   41     32   request digest
//   73     8    expires (u64 BE, <= 2^53-1; valid while now < expires)
//   81     32   HMAC-SHA256(approval key, bytes 0..80)
//   approval key   = HMAC-SHA256(root key, "capwallet-approval-v1")
//   request digest = SHA-256("capwallet-request-v1" 0x00 METHOD 0x00 path 0x00 body)

import { TokenError } from './reasons.js';
import { hmacSha256, sha256 } from './macaroon.js';
import {
  b64urlDecodeStrict, b64urlEncode, concat, constantTimeEqual, readUint64Safe, writeUint64, hex, utf8,
} from './encoding.js';

export const PREFIX = 'cwa1_';
const MAX_CHARS = 200;
const BODY_BYTES = 81;
const APPROVAL_BYTES = BODY_BYTES + 32;
const KEY_LABEL = utf8('capwallet-approval-v1');

/** The digest binding an approval to one request; the method must be ASCII. */
export async function requestDigest(method, path, body) {
  if (!/^[\x00-\x7f]*$/.test(method)) throw new TypeError('the HTTP method must be ASCII');
  const upper = method.replace(/[a-z]/g, (c) => c.toUpperCase()); // a-z only, nothing else
  return sha256(concat(utf8('capwallet-request-v1\0'), utf8(`${upper}\0${path}\0`), body));
}

export function approvalKey(rootKey) {
  return hmacSha256(rootKey, KEY_LABEL);
}

function body({ keyId, approvalId, tokenId, digest, expires }) {
  return concat([1], keyId, approvalId, tokenId, digest, writeUint64(expires));
}

/** Issue an approval string (what a wallet does; here for the mint-side vectors). */
export async function issueApproval({ rootKey, keyId, approvalId, tokenId, digest, expires }) {
  const b = body({ keyId, approvalId, tokenId, digest, expires });
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
  const expires = readUint64Safe(data, 73);
  if (expires === null) throw bad('approval expiry is out of range');
  return {
    keyId: data.subarray(1, 9), approvalId: data.subarray(9, 25), tokenId: data.subarray(25, 41),
    digest: data.subarray(41, 73), expires, body: data.subarray(0, BODY_BYTES), mac: data.subarray(BODY_BYTES),
  };
}

const same = constantTimeEqual;

/**
 * Check an approval for this token (its id and root key id) and this request digest at
 * `now`; returns the approval id (hex) to consume, or throws TokenError('approval_invalid').
 * `keys` maps key id (hex) to root key bytes.
 */
export async function checkApproval(text, keys, { tokenId, tokenKeyId, digest, now }) {
  const a = parseApproval(text);
  if (!same(a.keyId, tokenKeyId)) throw bad('approval was made under another root key than the token');
  const rootKey = keys.get(hex(a.keyId));
  if (rootKey === undefined) throw bad('approval was made under an unknown root key');
  if (!same(await hmacSha256(await approvalKey(rootKey), a.body), a.mac)) throw bad('approval signature does not match');
  if (!same(a.tokenId, tokenId)) throw bad('approval was issued for another token');
  if (digest === null || !same(a.digest, digest)) throw bad('approval was issued for a different request');
  if (now >= a.expires) throw bad('approval has expired');
  return hex(a.approvalId);
}
