// Building caveats to attenuate a token with: the same names as the Python API
// (capwallet.caveats: Models, Budget, Expires, ...), and the same typed values that
// inspect() returns and the verifier decodes ({type: 'models', values: [...]}, ...).
//
// encodeCaveat() writes the one canonical spelling of spec/caveats.md#grammar (name lists
// sorted by UTF-8 bytes and unique, percent-escapes only for unsafe bytes, upper-case hex)
// and then decodes its own output with the verifier's decoder, so a caveat this module
// writes is exactly one the relay reads back.

import { decodeCaveat } from './token/caveats.js';
import { normaliseOrigin } from './token/origins.js';
import { TokenError } from './token/reasons.js';
import { compareUtf8, hex, utf8 } from './token/encoding.js';
import { InvalidArgumentError } from './errors.js';

const SAFE = /[A-Za-z0-9\-._~:/@+]/;

function escapeArg(value) {
  let out = '';
  for (const ch of String(value)) {
    if (SAFE.test(ch)) out += ch;
    else for (const b of utf8(ch)) out += `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  if (out === '') throw new InvalidArgumentError('a caveat argument cannot be empty');
  return out;
}

function nonce() {
  return hex(globalThis.crypto.getRandomValues(new Uint8Array(8)));
}

const names = (values) => [...new Set(values)].sort(compareUtf8);
const tzArgs = (tz) => (tz && tz !== 'UTC' ? [tz] : []);

/** Valid from this Unix time (seconds). */
export const NotBefore = (time) => ({ type: 'not-before', time });
/** Valid until this Unix time (seconds). */
export const Expires = (time) => ({ type: 'expires', time });
export const Providers = (values) => ({ type: 'providers', values: names(values) });
export const Models = (values) => ({ type: 'models', values: names(values) });
export const Operations = (values) => ({ type: 'operations', values: names(values) });
export const Scopes = (values) => ({ type: 'scopes', values: names(values) });
export const AskFirst = (values) => ({ type: 'ask-first', values: names(values) });
export const ZeroRetention = () => ({ type: 'zero-retention' });
export const MaxInputTokens = (tokens) => ({ type: 'max-input-tokens', tokens });
export const MaxOutputTokens = (tokens) => ({ type: 'max-output-tokens', tokens });
/** A budget of `amount` minor units (cents for USD) per period: day, week, month, year, total. */
export const Budget = (amount, currency, period, tz = 'UTC') => (
  { type: 'budget', nonce: nonce(), amount, currency, period, tz });
export const TokenQuota = (tokens, period, tz = 'UTC') => (
  { type: 'token-quota', nonce: nonce(), tokens, period, tz });
/** At most `requests` calls per minute. */
export const Rate = (requests) => ({ type: 'rate', nonce: nonce(), requests });
/** Ask the user before any call that may cost more than `amount` minor units. */
export const ConfirmAbove = (amount, currency) => ({ type: 'confirm-above', amount, currency });
/** Logging level at the relay: none, metadata or full (the most restrictive wins). */
export const Logging = (level) => ({ type: 'logging', level });
export const App = (appId) => ({ type: 'app', appId });
/**
 * The only web origin a browser may present the token from (spec/caveats.md#origin), e.g.
 * Origin('https://notes.example'); a looser spelling (upper case, default port) is normalised.
 */
export const Origin = (origin) => ({ type: 'origin', origin: normaliseOrigin(String(origin)) ?? String(origin) });

function args(c) {
  switch (c.type) {
    case 'not-before': case 'expires': return [c.time];
    case 'providers': case 'models': case 'operations': case 'scopes': case 'ask-first':
      return names(c.values ?? []);
    case 'zero-retention': return [];
    case 'max-input-tokens': case 'max-output-tokens': return [c.tokens];
    case 'budget': return [c.nonce ?? nonce(), c.amount, c.currency, c.period, ...tzArgs(c.tz)];
    case 'token-quota': return [c.nonce ?? nonce(), c.tokens, c.period, ...tzArgs(c.tz)];
    case 'rate': return [c.nonce ?? nonce(), c.requests];
    case 'confirm-above': return [c.amount, c.currency];
    case 'logging': return [c.level];
    case 'app': return [c.appId];
    case 'origin': return [c.origin];
    default: return null;
  }
}

/** The canonical bytes of a typed caveat; throws InvalidArgumentError if it is not valid. */
export function encodeCaveat(caveat) {
  const list = caveat && typeof caveat === 'object' ? args(caveat) : null;
  if (list === null) {
    throw new InvalidArgumentError(`unknown caveat ${JSON.stringify(caveat?.type ?? caveat)}`, 'unknown_caveat');
  }
  for (const a of list) {
    if (typeof a === 'number' && !Number.isSafeInteger(a)) {
      throw new InvalidArgumentError(`caveat ${caveat.type}: ${a} is not an integer (amounts are minor units, e.g. cents)`, 'invalid_caveat');
    }
  }
  const bytes = utf8([caveat.type, ...list.map(escapeArg)].join(' '));
  try {
    decodeCaveat(bytes);
  } catch (err) {
    if (err instanceof TokenError) throw new InvalidArgumentError(err.message, err.reason);
    throw err;
  }
  return bytes;
}
