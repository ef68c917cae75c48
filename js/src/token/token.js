// Capability tokens: the string form, the 33-byte identifier, minting and attenuation
// (spec/token-format.md#string-form, #identifier, #limits, #order-of-parse-checks,
// #signature-chain, #attenuation).
//
//   token      = "cwt1_" base64url(canonical macaroon v2 bytes)   (at most 8192 characters)
//   identifier = version 0x01 | root key id (8) | token id (16) | issued_at (u64 BE, <= 2^53-1)

import { TokenError } from './reasons.js';
import * as mac from './macaroon.js';
import { b64urlDecodeStrict, b64urlEncode, concat, readUint64Safe, writeUint64, hex } from './encoding.js';

export const PREFIX = 'cwt1_';
export const MAX_TOKEN_CHARS = 8192;
export const MAX_CAVEATS = 64;
export const MAX_CAVEAT_BYTES = 1024;
export const PROTOCOL_VERSION = 1;
export const IDENTIFIER_BYTES = 33;

/** Decode the identifier: version first (a future format may differ in length), then layout. */
export function decodeIdentifier(data) {
  if (data.length < 1) throw new TokenError('malformed', 'identifier is empty');
  if (data[0] !== PROTOCOL_VERSION) {
    throw new TokenError('unsupported_version', `token protocol version ${data[0]} is not supported`);
  }
  if (data.length !== IDENTIFIER_BYTES) {
    throw new TokenError('malformed', `identifier must be ${IDENTIFIER_BYTES} bytes`);
  }
  const issuedAt = readUint64Safe(data, 25);
  if (issuedAt === null) throw new TokenError('malformed', 'issued_at is out of range');
  return {
    version: data[0],
    keyId: data.subarray(1, 9),
    tokenId: data.subarray(9, 25),
    issuedAt,
  };
}

export function encodeIdentifier(keyId, tokenId, issuedAt) {
  if (keyId.length !== 8 || tokenId.length !== 16) throw new Error('key id is 8 bytes, token id 16');
  return concat([PROTOCOL_VERSION], keyId, tokenId, writeUint64(issuedAt));
}

/** Strictly parse a token string: {identifier, raw: {identifier, caveats, signature}}. */
export function parseToken(text) {
  if (typeof text !== 'string') throw new TokenError('malformed', 'token must be a string');
  // UTF-16 units, not code points: a string where the two differ is not ASCII and so is
  // malformed anyway (it cannot be base64url), with the same reason.
  if (text.length > MAX_TOKEN_CHARS) {
    throw new TokenError('malformed', `token is longer than ${MAX_TOKEN_CHARS} characters`);
  }
  if (!text.startsWith(PREFIX)) throw new TokenError('malformed', `token does not start with ${PREFIX}`);
  const data = b64urlDecodeStrict(text.slice(PREFIX.length));
  if (data === null) throw new TokenError('malformed', 'token is not canonical unpadded base64url');
  const raw = mac.decode(data, { maxCaveats: MAX_CAVEATS, maxCaveatBytes: MAX_CAVEAT_BYTES });
  return { identifier: decodeIdentifier(raw.identifier), raw };
}

export function serialize(raw) {
  return PREFIX + b64urlEncode(mac.encode(raw));
}

function fits(raw) {
  if (raw.caveats.length > MAX_CAVEATS) throw new Error(`a token holds at most ${MAX_CAVEATS} caveats`);
  const text = serialize(raw);
  if (text.length > MAX_TOKEN_CHARS) throw new Error(`the token would exceed ${MAX_TOKEN_CHARS} characters`);
  return text;
}

/** Mint a token string from a root key, identifier fields and caveat bytes. */
export async function mint({ rootKey, keyId, tokenId, issuedAt, caveats }) {
  const identifier = encodeIdentifier(keyId, tokenId, issuedAt);
  return fits({ identifier, caveats, signature: await mac.chain(rootKey, identifier, caveats) });
}

/** Append caveats to a token without a key; the signature extends one HMAC per caveat. */
export async function attenuate(text, added) {
  const { raw } = parseToken(text);
  let signature = raw.signature;
  for (const c of added) signature = await mac.extend(signature, c);
  return fits({ identifier: raw.identifier, caveats: [...raw.caveats, ...added], signature });
}

/** The decoded parts of a token, in the shape the vectors state them. */
export function describe(text) {
  const { identifier: id, raw } = parseToken(text);
  return {
    token_hex: hex(mac.encode(raw)),
    identifier: {
      hex: hex(raw.identifier), version: id.version, key_id: hex(id.keyId),
      token_id: hex(id.tokenId), issued_at: id.issuedAt,
    },
    caveats: raw.caveats.map(hex),
    signature: hex(raw.signature),
  };
}
