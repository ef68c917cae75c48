// Verification: token + root keys + request + time + counters -> decision
// (spec/verification.md#algorithm: steps 1 to 8 below, then 9, allow).
//
//   1 parse            spec/token-format.md#order-of-parse-checks      malformed, unsupported_version
//   2 key, signature   spec/verification.md#key-lookup-and-signature   unknown_key, bad_signature
//   3 caveats          spec/caveats.md#decoding-a-caveat               unknown_caveat, invalid_caveat
//   4 revocation       spec/verification.md#revocation                 revoked
//   5 time (60 s)      spec/verification.md#clock-skew                 not_yet_valid, expired
//   6 request shape    spec/verification.md#request-shape              provider_ ... output_too_large
//   7 counters         spec/verification.md#counters                   price_unknown, rate/quota/budget
//   8 confirmation     spec/verification.md#confirmation               confirmation_required, approval_invalid
//
// The first failing check decides the reason. Comparisons are written as differences, as the
// spec states them, so every intermediate value stays within 2^53 and is exact in a double.
// Money: costs and budget counters are microunits; a caveat's amount (minor units, at most
// 9007199254) is multiplied by MICROS_PER_MINOR where it is compared, which stays below 2^53.

import { TokenError } from './reasons.js';
import { parseToken } from './token.js';
import { chain } from './macaroon.js';
import { decodeAll } from './caveats.js';
import { countersInCheckOrder, effective, pricedCurrencies } from './limits.js';
import { periodKey, periodEnd } from './periods.js';
import { checkApproval } from './approval.js';
import { normaliseOrigin } from './origins.js';
import { MAX_SAFE_INTEGER, constantTimeEqual, hex } from './encoding.js';
import { MICROS_PER_MINOR, formatMicros } from './money.js';

export const CLOCK_SKEW = 60;
// 9998-01-01T00:00:00Z: counters with a period other than total are defined before it only
// (spec/caveats.md#periods), so every period key and end is a date in years 0001-9999.
export const PERIOD_LIMIT = 253339228800;
const COUNTER_REASON = { rate: 'rate_limited', quota: 'quota_exceeded', budget: 'budget_exceeded' };

/**
 * Parse and authenticate a token and decode its caveats. `keys` maps key id (hex) to root
 * key bytes. Returns {tokenId, keyId, issuedAt, limits}; throws TokenError.
 */
export async function checkToken(text, keys) {
  const { identifier: id, raw } = parseToken(text);
  const rootKey = keys.get(hex(id.keyId));
  if (rootKey === undefined) throw new TokenError('unknown_key', `no root key with id ${hex(id.keyId)}`);
  const expected = await chain(rootKey, raw.identifier, raw.caveats);
  if (!constantTimeEqual(expected, raw.signature)) throw new TokenError('bad_signature', 'token signature does not match');
  const typed = decodeAll(raw.caveats);
  const limits = await effective(id.tokenId, raw.caveats.map((bytes, i) => [bytes, typed[i]]));
  return { tokenId: id.tokenId, keyId: id.keyId, issuedAt: id.issuedAt, limits };
}

class Deny extends Error {
  constructor(reason, message, counter) {
    super(message);
    this.reason = reason;
    this.counter = counter;
  }
}

/** Stop with a reason; a counter denial also names the counter it stopped on. */
function deny(reason, message, counter = null) {
  throw new Deny(reason, message, counter);
}

/**
 * A request is {provider, model, operation, scopes, input_tokens, output_tokens,
 * cost: {currency: microunits}, zero_retention, approval, digest (Uint8Array | null)}; it is
 * a model call if it has a provider, else a resource access (spec/verification.md#requests).
 * counters maps counter key -> used; revoked lists token ids (hex).
 */
const sortUtf8Safe = (set) => [...set].sort().join(', ') || 'none (the caveats conflict)';

async function evaluate(v, request, now, counters, keys) {
  const l = v.limits;
  // Time.
  if (v.issuedAt - now > CLOCK_SKEW) deny('not_yet_valid', 'token was issued in the future');
  if (l.notBefore !== null && l.notBefore - now > CLOCK_SKEW) deny('not_yet_valid', `not valid before ${l.notBefore}`);
  if (l.expires !== null && now - l.expires >= CLOCK_SKEW) deny('expired', `token expired at ${l.expires}`);
  // Request shape.
  if (l.origins !== null && request.origin !== null && request.origin !== undefined) {
    const seen = normaliseOrigin(request.origin);
    if (seen === null || !l.origins.has(seen)) {
      deny('origin_mismatch', `this token may be used from ${sortUtf8Safe(l.origins)}, not from ${String(request.origin).slice(0, 80)}`);
    }
  }
  const modelCall = request.provider !== null && request.provider !== undefined;
  if (modelCall) {
    if (l.providers !== null && !l.providers.has(request.provider)) deny('provider_not_allowed', `provider ${request.provider}`);
    if (l.models !== null && !l.models.has(request.model)) deny('model_not_allowed', `model ${request.model}`);
    if (l.operations !== null && !l.operations.has(request.operation)) deny('operation_not_allowed', `operation ${request.operation}`);
  }
  if (l.scopes !== null) {
    for (const s of request.scopes) if (!l.scopes.has(s)) deny('scope_missing', `scope ${s} was not granted`);
  }
  if (modelCall) {
    if (l.zeroRetention && !request.zero_retention) deny('zero_retention_required', 'provider retains data');
    if (l.maxInputTokens !== null && request.input_tokens > l.maxInputTokens) deny('input_too_large', 'input too large');
    if (l.maxOutputTokens !== null && request.output_tokens > l.maxOutputTokens) deny('output_too_large', 'output too large');
  }
  // Counters.
  const debits = [];
  if (modelCall) {
    if (now >= PERIOD_LIMIT && l.counters.some((c) => c.period !== 'total')) {
      deny('period_out_of_range', "the verifier's clock is past 9998-01-01T00:00:00Z, the last time for which this token's counter periods are defined");
    }
    const cost = request.cost;
    for (const cur of pricedCurrencies(l)) {
      if (!Object.hasOwn(cost, cur)) deny('price_unknown', `the request could not be priced in ${cur}`);
    }
    const minuteStart = now - (now % 60); // every period boundary falls on a whole minute
    for (const c of countersInCheckOrder(l)) {
      const amount = c.kind === 'budget' ? cost[c.unit]
        : c.kind === 'quota' ? request.input_tokens + request.output_tokens : 1;
      const limit = c.kind === 'budget' ? c.limit * MICROS_PER_MINOR : c.limit; // counter units
      const key = `${c.counterId}/${periodKey(c.period, minuteStart, c.tz)}`;
      const used = Object.hasOwn(counters, key) ? counters[key] : 0;
      const resetsAt = periodEnd(c.period, minuteStart, c.tz);
      if (amount > 0 && amount > limit - used) {
        const fmt = (n) => (c.kind === 'budget' ? formatMicros(n, c.unit) : `${n} ${c.unit}`);
        deny(COUNTER_REASON[c.kind], `${c.kind} ${key}: ${fmt(used)} of ${fmt(limit)} used, this call needs ${fmt(amount)}`, {
          kind: c.kind, counter_id: c.counterId, counter_key: key, unit: c.unit, limit, used,
          needed: Math.min(amount, MAX_SAFE_INTEGER), resets_at: resetsAt,
        });
      }
      debits.push({ kind: c.kind, counter_key: key, amount, limit, used, unit: c.unit, resets_at: resetsAt });
    }
  }
  // Confirmation.
  let why = null;
  if (modelCall) {
    for (const [cur, threshold] of l.confirmAbove) {
      const above = threshold * MICROS_PER_MINOR;
      if (request.cost[cur] > above) {
        why = `this call may cost ${formatMicros(request.cost[cur], cur)}, above ${formatMicros(above, cur)}`;
        break;
      }
    }
  }
  if (why === null) {
    for (const s of request.scopes) {
      if (l.askFirst.has(s)) {
        why = `scope ${s} needs approval each time`;
        break;
      }
    }
  }
  let approvalId = null;
  if (why !== null) {
    if (request.approval === null) deny('confirmation_required', why);
    try {
      approvalId = await checkApproval(request.approval, keys, {
        tokenId: v.tokenId, tokenKeyId: v.keyId, digest: request.digest, now,
        kind: modelCall ? 'model_call' : 'resource_access',
      });
    } catch (err) {
      if (err instanceof TokenError) deny('approval_invalid', err.message);
      throw err;
    }
  }
  return { debits, approvalId };
}

/**
 * A denial: no debits, no approval; token_id and limits once the token passed step 3; the
 * counter it stopped on for rate_limited, quota_exceeded and budget_exceeded, else null.
 */
function denial(reason, message, tokenId = null, limits = null, counter = null) {
  return {
    allowed: false, reason, message, token_id: tokenId, limits, debits: [], approval_id: null,
    needs_approval: reason === 'confirmation_required', counter,
  };
}

/**
 * The decision for one request (spec/verification.md#decision): {allowed, reason, message,
 * token_id, limits, debits, approval_id, needs_approval, counter}. `keys` maps key id (hex)
 * to root key.
 */
export async function verify(token, keys, request, now, counters = {}, revoked = []) {
  // The clock is the caller's, not the token's: one outside the spec's range is a bug of the
  // caller (a negative now would floor to a different minute here than in Python), so it
  // throws rather than deciding (spec/verification.md#inputs).
  if (!Number.isSafeInteger(now) || now < 0) {
    throw new RangeError(`now must be an integer Unix time from 0 to 2^53-1, got ${now}`);
  }
  let v;
  try {
    v = await checkToken(token, keys);
  } catch (err) {
    if (err instanceof TokenError) return denial(err.reason, err.message);
    throw err;
  }
  const tokenId = hex(v.tokenId);
  if (revoked.includes(tokenId)) return denial('revoked', 'this token has been revoked', tokenId, v.limits);
  try {
    const { debits, approvalId } = await evaluate(v, request, now, counters, keys);
    return {
      allowed: true, reason: null, message: 'allowed', token_id: tokenId, limits: v.limits, debits,
      approval_id: approvalId, needs_approval: false, counter: null,
    };
  } catch (err) {
    if (err instanceof Deny) return denial(err.reason, err.message, tokenId, v.limits, err.counter);
    throw err;
  }
}
