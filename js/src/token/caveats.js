// Caveat vocabulary v1: the text grammar and the registry of typed caveats
// (spec/caveats.md#grammar, #percent-encoding, #integers, #name-lists, #decoding-a-caveat,
// #registry and one section per type, #currencies, #time-zones).
//
//   caveat = name *(SP arg)      name = [a-z][a-z0-9-]{0,31}
//   arg    = 1*(safe / "%" HEXDIG-UPPER HEXDIG-UPPER), safe = A-Z a-z 0-9 - . _ ~ : / @ +
//
// Exactly one spelling is accepted for each caveat: a percent-escape may not encode a safe
// byte, the decoded bytes must be UTF-8, integers are canonical decimals in 0..2^53-1 and
// name lists are strictly ascending by UTF-8 bytes. A name outside the registry is
// unknown_caveat; a registered name whose arguments fail is invalid_caveat. Every caveat's
// type is checked before any caveat's arguments, so unknown_caveat wins wherever it stands.

import { TokenError } from './reasons.js';
import { MAX_SAFE_INTEGER, compareUtf8, latin1, utf8 as utf8Bytes } from './encoding.js';
import { MAX_MINOR_AMOUNT, isKnownCurrency } from './money.js';
import { isTzName } from './tzdb.js';
import { isCanonicalOrigin } from './origins.js';

const MAX_ARGS = 128;
const CAVEAT = /^[a-z][a-z0-9-]{0,31}(?: (?:[A-Za-z0-9\-._~:/@+]|%[0-9A-F]{2})+)*$/;
const SAFE = new Set(utf8Bytes(
  'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/@+'));
const INT = /^(?:0|[1-9][0-9]{0,15})$/;
const NONCE = /^[0-9a-f]{16}$/;
const CURRENCY = /^[A-Z]{3}$/;
const TZ = /^[A-Za-z0-9_+-]+(?:\/[A-Za-z0-9_+-]+)*$/;
export const PERIODS = ['day', 'week', 'month', 'year', 'total'];
export const LOGGING_LEVELS = ['none', 'metadata', 'full']; // most restrictive first
const utf8 = new TextDecoder('utf-8', { fatal: true });

class GrammarError extends Error {}

function decodeArg(text) {
  if (!text.includes('%')) return text;
  const out = [];
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '%') {
      const b = parseInt(text.slice(i + 1, i + 3), 16);
      if (SAFE.has(b)) throw new GrammarError(`argument ${text} percent-encodes a safe character`);
      out.push(b);
      i += 2;
    } else {
      out.push(text.charCodeAt(i));
    }
  }
  try {
    return utf8.decode(new Uint8Array(out));
  } catch {
    throw new GrammarError(`argument ${text} is not UTF-8 once decoded`);
  }
}

/** Name and decoded arguments of caveat bytes that follow the grammar. */
function split(bytes) {
  const text = latin1(bytes); // one char per byte; non-ASCII fails below
  if (!CAVEAT.test(text)) throw new GrammarError('caveat does not follow the grammar');
  const parts = text.split(' ');
  if (parts.length - 1 > MAX_ARGS) throw new GrammarError(`more than ${MAX_ARGS} arguments`);
  return parts.slice(1).map(decodeArg);
}

function int(text, what) {
  if (!INT.test(text) || BigInt(text) > BigInt(MAX_SAFE_INTEGER)) {
    throw new GrammarError(`${what} ${text} is not a canonical integer in 0..2^53-1`);
  }
  return Number(text);
}

/** A budget or confirm-above amount: minor units, small enough to count in microunits. */
function amount(text) {
  const n = int(text, 'amount');
  if (n > MAX_MINOR_AMOUNT) throw new GrammarError(`amount ${n} is above the largest allowed, ${MAX_MINOR_AMOUNT}`);
  return n;
}

function one(args, name) {
  if (args.length !== 1) throw new GrammarError(`${name} takes exactly one argument`);
  return args[0];
}

function nameList(args, name, allowEmpty) {
  if (args.length === 0 && !allowEmpty) throw new GrammarError(`${name} needs at least one value`);
  for (let i = 1; i < args.length; i++) {
    if (compareUtf8(args[i - 1], args[i]) >= 0) {
      throw new GrammarError(`${name} must be unique and in ascending byte order`);
    }
  }
  return args;
}

function nonce(text) {
  if (!NONCE.test(text)) throw new GrammarError('nonce must be 16 lowercase hex digits');
  return text;
}

function currency(text) {
  if (!CURRENCY.test(text) || !isKnownCurrency(text)) {
    throw new GrammarError(`currency ${text} is not a known ISO 4217 code`);
  }
  return text;
}

function period(text) {
  if (!PERIODS.includes(text)) throw new GrammarError(`period ${text} is not one of ${PERIODS}`);
  return text;
}

/** The optional trailing time zone: absent means UTC; "UTC" itself must be omitted. */
function tz(rest) {
  if (rest.length === 0) return 'UTC';
  if (rest.length > 1) throw new GrammarError('too many arguments');
  const name = rest[0];
  if (name === 'UTC' || !TZ.test(name) || !isTzName(name)) {
    throw new GrammarError(`time zone ${name} is not a tz database name (omit it for UTC)`);
  }
  return name;
}

function counted(args, min, max, usage) {
  if (args.length < min || args.length > max) throw new GrammarError(usage);
  return args;
}

/** name -> (decoded args) -> typed caveat. A Map, so "constructor" and friends are unknown. */
const REGISTRY = new Map([
  ['not-before', (a) => ({ type: 'not-before', time: int(one(a, 'not-before'), 'time') })],
  ['expires', (a) => ({ type: 'expires', time: int(one(a, 'expires'), 'time') })],
  ['providers', (a) => ({ type: 'providers', values: nameList(a, 'providers', false) })],
  ['models', (a) => ({ type: 'models', values: nameList(a, 'models', false) })],
  ['operations', (a) => ({ type: 'operations', values: nameList(a, 'operations', false) })],
  ['scopes', (a) => ({ type: 'scopes', values: nameList(a, 'scopes', true) })],
  ['ask-first', (a) => ({ type: 'ask-first', values: nameList(a, 'ask-first', false) })],
  ['zero-retention', (a) => {
    if (a.length) throw new GrammarError('zero-retention takes no arguments');
    return { type: 'zero-retention' };
  }],
  ['max-input-tokens', (a) => ({ type: 'max-input-tokens', tokens: int(one(a, 'max-input-tokens'), 'tokens') })],
  ['max-output-tokens', (a) => ({ type: 'max-output-tokens', tokens: int(one(a, 'max-output-tokens'), 'tokens') })],
  ['budget', (a) => {
    counted(a, 4, 5, 'budget takes: nonce amount currency period [time-zone]');
    return {
      type: 'budget', nonce: nonce(a[0]), amount: amount(a[1]), currency: currency(a[2]),
      period: period(a[3]), tz: tz(a.slice(4)),
    };
  }],
  ['token-quota', (a) => {
    counted(a, 3, 4, 'token-quota takes: nonce tokens period [time-zone]');
    return {
      type: 'token-quota', nonce: nonce(a[0]), tokens: int(a[1], 'tokens'), period: period(a[2]),
      tz: tz(a.slice(3)),
    };
  }],
  ['rate', (a) => {
    counted(a, 2, 2, 'rate takes: nonce requests-per-minute');
    return { type: 'rate', nonce: nonce(a[0]), requests: int(a[1], 'requests') };
  }],
  ['confirm-above', (a) => {
    counted(a, 2, 2, 'confirm-above takes: amount currency');
    return { type: 'confirm-above', amount: amount(a[0]), currency: currency(a[1]) };
  }],
  ['logging', (a) => {
    const level = one(a, 'logging');
    if (!LOGGING_LEVELS.includes(level)) throw new GrammarError(`logging level ${level} is unknown`);
    return { type: 'logging', level };
  }],
  ['app', (a) => ({ type: 'app', appId: one(a, 'app') })],
  ['origin', (a) => {
    const origin = one(a, 'origin');
    if (!isCanonicalOrigin(origin)) throw new GrammarError(`${origin} is not a canonical web origin`);
    return { type: 'origin', origin };
  }],
]);

export const CAVEAT_TYPES = [...REGISTRY.keys()];

/** The caveat's type name: the bytes before the first space. */
function typeName(bytes) {
  const space = bytes.indexOf(0x20);
  return latin1(space < 0 ? bytes : bytes.subarray(0, space));
}

function knownType(bytes) {
  const name = typeName(bytes);
  if (!REGISTRY.has(name)) throw new TokenError('unknown_caveat', `unknown caveat type ${name.slice(0, 40)}`);
  return name;
}

/** One caveat's typed value; throws TokenError(unknown_caveat | invalid_caveat). */
export function decodeCaveat(bytes) {
  const name = knownType(bytes);
  try {
    return REGISTRY.get(name)(split(bytes));
  } catch (err) {
    if (err instanceof GrammarError) {
      throw new TokenError('invalid_caveat', `caveat ${name} does not decode: ${err.message}`);
    }
    throw err;
  }
}

/** A token's caveats in order: every type is checked before any arguments. */
export function decodeAll(caveats) {
  for (const c of caveats) knownType(c);
  return caveats.map(decodeCaveat);
}
