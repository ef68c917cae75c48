// The macaroon layer: a strict reader and writer for the canonical libmacaroons v2 binary
// form, and the HMAC-SHA256 signature chain (spec/token-format.md#layout,
// #parsing-rules, #signature-chain, #attenuation; libmacaroons doc/format.txt).
//
// Canonical form: 0x02; no location field; identifier field (type 2); EOS; for each
// first-party caveat an identifier field then EOS (no location, no verification id); EOS;
// signature field (type 6) of 32 bytes; nothing after it. Lengths are minimal varints of at
// most 3 bytes. Any other byte sequence is malformed.
//
// HMAC comes from WebCrypto (globalThis.crypto.subtle: Node 20+ and every current browser),
// which is asynchronous: so are the chain, minting, attenuation and verification.

import { TokenError } from './reasons.js';
import { encodeVarint, hex, readVarint, utf8 } from './encoding.js';

const VERSION = 0x02;
const EOS = 0;
const LOCATION = 1;
const IDENTIFIER = 2;
const VID = 4;
const SIGNATURE = 6;
const KEY_GENERATOR = utf8('macaroons-key-generator');
export const SIGNATURE_BYTES = 32;
const HMAC = { name: 'HMAC', hash: 'SHA-256' };

function subtle() {
  const s = globalThis.crypto?.subtle;
  if (!s) throw new Error('WebCrypto (crypto.subtle) is not available: use Node 20+ or a page served over https or from localhost');
  return s;
}

/** HMAC-SHA256(key, message) as 32 bytes. */
export async function hmacSha256(key, message) {
  const k = await subtle().importKey('raw', key, HMAC, false, ['sign']);
  return new Uint8Array(await subtle().sign('HMAC', k, message));
}

/** SHA-256(message) as 32 bytes. */
export async function sha256(message) {
  return new Uint8Array(await subtle().digest('SHA-256', message));
}

/** libmacaroons' key derivation: HMAC-SHA256(key = "macaroons-key-generator", root key). */
export function deriveKey(rootKey) {
  return hmacSha256(KEY_GENERATOR, rootKey);
}

/** Signatures after the identifier and after each caveat; the last is the macaroon's. */
export async function chainSteps(rootKey, identifier, caveats) {
  const steps = [await hmacSha256(await deriveKey(rootKey), identifier)];
  for (const c of caveats) steps.push(await hmacSha256(steps[steps.length - 1], c));
  return steps;
}

export async function chain(rootKey, identifier, caveats) {
  const steps = await chainSteps(rootKey, identifier, caveats);
  return steps[steps.length - 1];
}

/**
 * The chain id (spec/token-format.md#chain-id): hex of the first 8 bytes of SHA-256 of the
 * signature. Names one chain (a sub-task's attenuated token gets its own); not a secret.
 */
export async function chainId(signature) {
  return hex((await sha256(signature)).subarray(0, 8));
}

/** Attenuation: the signature after appending one caveat (needs no key). */
export function extend(signature, caveat) {
  return hmacSha256(signature, caveat);
}

function field(type, data) {
  return [type, ...encodeVarint(data.length), ...data];
}

/** Canonical v2 bytes of {identifier, caveats, signature}. */
export function encode({ identifier, caveats, signature }) {
  const out = [VERSION, ...field(IDENTIFIER, identifier), EOS];
  for (const c of caveats) out.push(...field(IDENTIFIER, c), EOS);
  out.push(EOS, ...field(SIGNATURE, signature));
  return new Uint8Array(out);
}

const malformed = (message) => new TokenError('malformed', message);

function readField(data, pos, expected, what) {
  if (pos >= data.length) throw malformed('token ends in the middle of a field');
  if (data[pos] !== expected) {
    throw malformed(`expected ${what} field (type ${expected}), found type ${data[pos]}`);
  }
  const [length, start] = readVarint(data, pos + 1);
  const end = start + length;
  if (end > data.length) throw malformed(`${what} field runs past the end of the token`);
  return [data.subarray(start, end), end];
}

/** Parse canonical v2 bytes; anything else throws TokenError('malformed'). */
export function decode(data, { maxCaveats, maxCaveatBytes }) {
  const n = data.length;
  if (n === 0) throw malformed('token is empty');
  if (data[0] !== VERSION) throw malformed('not a macaroon v2');
  if (n > 1 && data[1] === LOCATION) throw malformed('the macaroon location field must be absent');
  let [identifier, pos] = readField(data, 1, IDENTIFIER, 'identifier');
  if (pos >= n || data[pos] !== EOS) throw malformed('macaroon header has extra fields or is truncated');
  pos += 1;
  const caveats = [];
  for (;;) {
    if (pos >= n) throw malformed('token ends inside the caveat section');
    const type = data[pos];
    if (type === EOS) {
      pos += 1;
      break;
    }
    if (type === LOCATION) throw malformed('caveat location fields are not allowed');
    if (type !== IDENTIFIER) throw malformed(`unexpected field type ${type} in caveat section`);
    let cid;
    [cid, pos] = readField(data, pos, IDENTIFIER, 'caveat identifier');
    if (cid.length > maxCaveatBytes) throw malformed(`caveat is longer than ${maxCaveatBytes} bytes`);
    if (pos >= n) throw malformed('token ends inside a caveat');
    if (data[pos] === VID) throw malformed('third-party caveats are not allowed');
    if (data[pos] !== EOS) throw malformed(`unexpected field type ${data[pos]} after a caveat`);
    pos += 1;
    caveats.push(cid);
    if (caveats.length > maxCaveats) throw malformed(`token has more than ${maxCaveats} caveats`);
  }
  let signature;
  [signature, pos] = readField(data, pos, SIGNATURE, 'signature');
  if (signature.length !== SIGNATURE_BYTES) throw malformed('signature is not 32 bytes');
  if (pos !== n) throw malformed(`${n - pos} trailing bytes after the signature`);
  return { identifier, caveats, signature };
}
