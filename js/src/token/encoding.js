// Byte-level encodings: strict base64url (spec/token-format.md#string-form), minimal
// unsigned LEB128 varints (spec/token-format.md#varints), big-endian integers, and the
// protocol's one string order, UTF-8 bytes (spec/caveats.md#name-lists).
//
// Strictness is the point: exactly one string per byte sequence, so two verifiers can never
// disagree about which token a string is. Plain JavaScript on Uint8Array (no Node Buffer), so
// the same code runs in Node 20+ and in browsers.

import { TokenError } from './reasons.js';

export const MAX_SAFE_INTEGER = Number.MAX_SAFE_INTEGER; // 2^53 - 1: every protocol integer
const B64URL = /^[A-Za-z0-9_-]*$/;

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const VALUE = new Map([...ALPHABET].map((c, i) => [c, i]));
const utf8Encoder = new TextEncoder();

/** The UTF-8 bytes of a string. */
export function utf8(text) {
  return utf8Encoder.encode(text);
}

/** base64url without padding. */
export function b64urlEncode(bytes) {
  let out = '';
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += ALPHABET[n >> 18] + ALPHABET[(n >> 12) & 63] + ALPHABET[(n >> 6) & 63] + ALPHABET[n & 63];
  }
  const left = bytes.length - i;
  if (left === 1) {
    const n = bytes[i] << 16;
    out += ALPHABET[n >> 18] + ALPHABET[(n >> 12) & 63];
  } else if (left === 2) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += ALPHABET[n >> 18] + ALPHABET[(n >> 12) & 63] + ALPHABET[(n >> 6) & 63];
  }
  return out;
}

/** Decode base64url text already checked against the alphabet and the length rule. */
function b64urlDecode(text) {
  const out = new Uint8Array(Math.floor((text.length * 3) / 4));
  let o = 0;
  let acc = 0;
  let bits = 0;
  for (const c of text) {
    acc = (acc << 6) | VALUE.get(c);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
    acc &= (1 << bits) - 1;
  }
  return out;
}

/**
 * Decode unpadded base64url, accepting only the canonical spelling: the alphabet
 * A-Z a-z 0-9 - _, no padding, no length of 1 mod 4, and zero unused trailing bits
 * (so re-encoding gives back the same text). Returns null for anything else.
 */
export function b64urlDecodeStrict(text) {
  if (typeof text !== 'string' || !B64URL.test(text) || text.length % 4 === 1) return null;
  const data = b64urlDecode(text);
  return b64urlEncode(data) === text ? data : null;
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
  let out = '';
  for (const b of bytes) out += b.toString(16).padStart(2, '0');
  return out;
}

/** Bytes of lowercase or uppercase hex; like Node's Buffer, stops at the first bad pair. */
export function fromHex(text) {
  const out = [];
  for (let i = 0; i + 1 < text.length; i += 2) {
    const pair = text.slice(i, i + 2);
    if (!/^[0-9a-fA-F]{2}$/.test(pair)) break;
    out.push(parseInt(pair, 16));
  }
  return new Uint8Array(out);
}

/** One Uint8Array of byte arrays (Uint8Array or plain arrays of bytes) end to end. */
export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** An unsigned big-endian 64-bit integer as a Number, or null above 2^53 - 1. */
export function readUint64Safe(data, offset) {
  const v = new DataView(data.buffer, data.byteOffset, data.length).getBigUint64(offset, false);
  return v > BigInt(MAX_SAFE_INTEGER) ? null : Number(v);
}

export function writeUint64(value) {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(value), false);
  return b;
}

/** Compare byte arrays lexicographically: negative, zero or positive. */
export function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/** Compare two strings by their UTF-8 bytes (the protocol's only string order). */
export function compareUtf8(a, b) {
  return compareBytes(utf8(a), utf8(b));
}

/** Equal byte arrays, in time that depends on the length only, never on where they differ. */
export function constantTimeEqual(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/** One char per byte (latin1): bytes that are ASCII read as themselves. */
export function latin1(bytes) {
  let out = '';
  for (const b of bytes) out += String.fromCharCode(b);
  return out;
}

export function sortUtf8(values) {
  return [...values].sort(compareUtf8);
}
