// Effective limits: the intersection of every caveat in a token
// (spec/caveats.md#effective-limits, #counter-ids; spec/budgets.md#identical-caveats).
//
// Latest not-before, earliest expiry, intersection of each name set, smallest cap, union of
// ask-first scopes, the lowest confirm-above per currency, the most restrictive logging level.
// Budgets, quotas and rates never merge: each is its own counter, identified by
// SHA-256(token id || the caveat's signed bytes)[0..16] in hex, and every one is debited.
// Identical caveat bytes name one counter, debited once. The limits list counters in token
// order; verification checks them rate, then quota, then budget (the order of the reason
// codes), in token order within a kind.

import { LOGGING_LEVELS } from './caveats.js';
import { compareUtf8, concat, hex, sortUtf8 } from './encoding.js';
import { sha256 } from './macaroon.js';

const RANK = { rate: 0, quota: 1, budget: 2 };
const COUNTED = new Set(['budget', 'token-quota', 'rate']);

export async function counterId(tokenId, caveatBytes) {
  return hex((await sha256(concat(tokenId, caveatBytes))).subarray(0, 16));
}

function intersect(current, values) {
  return current === null ? new Set(values) : new Set(values.filter((v) => current.has(v)));
}

function min(current, value) {
  return current === null ? value : Math.min(current, value);
}

/** Combine [caveat bytes, typed caveat] pairs into one limits object. */
export async function effective(tokenId, pairs) {
  const l = {
    notBefore: null, expires: null, providers: null, models: null, operations: null,
    scopes: null, askFirst: new Set(), zeroRetention: false, maxInputTokens: null,
    maxOutputTokens: null, counters: [], confirmAbove: new Map(), logging: null, apps: [],
    origins: null,
  };
  const seen = new Set();
  const ids = await Promise.all(pairs.map(([bytes, c]) => (COUNTED.has(c.type) ? counterId(tokenId, bytes) : null)));
  let at = 0;
  const counter = (bytes, fields) => {
    const id = ids[at];
    if (!seen.has(id)) {
      seen.add(id);
      l.counters.push({ counterId: id, tz: 'UTC', ...fields });
    }
  };
  for (; at < pairs.length; at++) {
    const [bytes, c] = pairs[at];
    switch (c.type) {
      case 'not-before': l.notBefore = l.notBefore === null ? c.time : Math.max(l.notBefore, c.time); break;
      case 'expires': l.expires = min(l.expires, c.time); break;
      case 'providers': l.providers = intersect(l.providers, c.values); break;
      case 'models': l.models = intersect(l.models, c.values); break;
      case 'operations': l.operations = intersect(l.operations, c.values); break;
      case 'scopes': l.scopes = intersect(l.scopes, c.values); break;
      case 'ask-first': for (const v of c.values) l.askFirst.add(v); break;
      case 'zero-retention': l.zeroRetention = true; break;
      case 'max-input-tokens': l.maxInputTokens = min(l.maxInputTokens, c.tokens); break;
      case 'max-output-tokens': l.maxOutputTokens = min(l.maxOutputTokens, c.tokens); break;
      case 'budget':
        counter(bytes, { kind: 'budget', limit: c.amount, unit: c.currency, period: c.period, tz: c.tz });
        break;
      case 'token-quota':
        counter(bytes, { kind: 'quota', limit: c.tokens, unit: 'tokens', period: c.period, tz: c.tz });
        break;
      case 'rate':
        counter(bytes, { kind: 'rate', limit: c.requests, unit: 'requests', period: 'minute' });
        break;
      case 'confirm-above': {
        const old = l.confirmAbove.get(c.currency);
        l.confirmAbove.set(c.currency, old === undefined ? c.amount : Math.min(old, c.amount));
        break;
      }
      case 'logging': {
        const rank = (x) => LOGGING_LEVELS.indexOf(x);
        l.logging = l.logging === null || rank(c.level) < rank(l.logging) ? c.level : l.logging;
        break;
      }
      case 'app': l.apps.push(c.appId); break;
      case 'origin': l.origins = intersect(l.origins, [c.origin]); break;
      default: throw new Error(`unhandled caveat type ${c.type}`);
    }
  }
  return l;
}

/** The counters in the order verification checks and debits them. */
export function countersInCheckOrder(l) {
  return [...l.counters].sort((a, b) => RANK[a.kind] - RANK[b.kind]); // stable sort
}

/** Currencies a model call must be priced in: budget currencies, then confirm-above ones. */
export function pricedCurrencies(l) {
  const out = new Set(l.counters.filter((c) => c.kind === 'budget').map((c) => c.unit));
  for (const cur of l.confirmAbove.keys()) out.add(cur);
  return [...out];
}

/** The limits in the JSON shape of the vectors ("expected.limits"). */
export function limitsToJson(l) {
  const names = (s) => (s === null ? null : sortUtf8(s));
  return {
    not_before: l.notBefore,
    expires: l.expires,
    providers: names(l.providers),
    models: names(l.models),
    operations: names(l.operations),
    scopes: names(l.scopes),
    ask_first: sortUtf8(l.askFirst),
    zero_retention: l.zeroRetention,
    max_input_tokens: l.maxInputTokens,
    max_output_tokens: l.maxOutputTokens,
    counters: l.counters.map((c) => ({
      kind: c.kind, counter_id: c.counterId, limit: c.limit, unit: c.unit, period: c.period, tz: c.tz,
    })),
    confirm_above: Object.fromEntries([...l.confirmAbove].sort(([a], [b]) => compareUtf8(a, b))),
    logging: l.logging,
    apps: [...l.apps],
    origins: names(l.origins),
  };
}
