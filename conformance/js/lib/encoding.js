// Byte-level encodings: strict base64url (spec/token-format.md#string-form), minimal
// unsigned LEB128 varints (spec/token-format.md#varints), big-endian integers, and the
// protocol's one string order, UTF-8 bytes (spec/caveats.md#name-lists).
//
// Strictness is the point: exactly one string per byte sequence, so two verifiers can never
// disagree about which token a string is.

import { TokenError } from './reasons.js';

export const MAX_SAFE_INTEGER = Number.MAX_SAFE_INTEGER; // 2^53 - 1: every protocol integer
const B64URL = /^[A-Za-z0-9_-]*$/;

/** base64url without padding. */
export function b64urlEncode(bytes) {
  return Buffer.from(bytes).toString('base64url');
}

/**
 * Decode unpadded base64url, accepting only the canonical spelling: the alphabet
 * A-Z a-z 0-9 - _, no padding, no length of 1 mod 4, and zero unused trailing bits
 * (so re-encoding gives back the same text). Returns null for anything else.
 */
export function b64urlDecodeStrict(text) {
  if (typeof text !== 'string' || !B64URL.test(text) || text.length % 4 === 1) return null;
  const data = Buffer.from(text, 'base64url');
  return b64urlEncode(data) === text ? new Uint8Array(data) : null;
}

/** Unsigned LEB128 of a non-negative integer. */
export function encodeVarint(value) {
  const out = [];
  while (value >= 0x80) {
    out.push((value & 0x7f) | 0x80);
    value = Math.floor(value / 128);
  }
  out.push(value);
  return out;
}

/**
 * Read a minimal unsigned LEB128 varint of at most `maxBytes` bytes at `pos`.
 * Returns [value, position after it]; throws TokenError('malformed').
 */
export function readVarint(data, pos, maxBytes = 3) {
  let value = 0;
  for (let i = 0; i < maxBytes; i++) {
    if (pos >= data.length) throw new TokenError('malformed', 'token ends in the middle of a field');
    const b = data[pos++];
    value += (b & 0x7f) * 2 ** (7 * i);
    if (b < 0x80) {
      if (b === 0 && i > 0) throw new TokenError('malformed', 'field length varint is not minimal');
      return [value, pos];
    }
  }
  throw new TokenError('malformed', 'field length varint is too long');
}

export function hex(bytes) {
  return Buffer.from(bytes).toString('hex');
}

export function fromHex(text) {
  return new Uint8Array(Buffer.from(text, 'hex'));
}

export function concat(...parts) {
  return new Uint8Array(Buffer.concat(parts.map((p) => Buffer.from(p))));
}

/** An unsigned big-endian 64-bit integer as a Number, or null above 2^53 - 1. */
export function readUint64Safe(data, offset) {
  const v = Buffer.from(data.buffer, data.byteOffset, data.length).readBigUInt64BE(offset);
  return v > BigInt(MAX_SAFE_INTEGER) ? null : Number(v);
}

export function writeUint64(value) {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(value));
  return new Uint8Array(b);
}

/** Compare two strings by their UTF-8 bytes (the protocol's only string order). */
export function compareUtf8(a, b) {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

export function sortUtf8(values) {
  return [...values].sort(compareUtf8);
}
