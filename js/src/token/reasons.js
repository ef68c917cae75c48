// Reason codes and the error that carries one (spec/verification.md#reason-codes).
//
// The list is closed and ordered: verification runs its checks in this order, so the first
// failing check decides the reason. A verifier returns exactly these strings.

export const REASONS = Object.freeze([
  // Stage 1: the token itself.
  'malformed', 'unsupported_version', 'unknown_key', 'bad_signature', 'unknown_caveat',
  'invalid_caveat', 'revoked',
  // Stage 2: time.
  'not_yet_valid', 'expired',
  // Stage 3: the shape of the request.
  'origin_mismatch', 'provider_not_allowed', 'model_not_allowed', 'operation_not_allowed', 'scope_missing',
  'zero_retention_required', 'input_too_large', 'output_too_large',
  // Stage 4: counters.
  'period_out_of_range', 'price_unknown', 'rate_limited', 'quota_exceeded', 'budget_exceeded',
  // Stage 5: human confirmation.
  'confirmation_required', 'approval_invalid',
]);

/** A token, caveat or approval that cannot be accepted; `reason` is one of REASONS. */
export class TokenError extends Error {
  constructor(reason, message) {
    super(message);
    if (!REASONS.includes(reason)) throw new Error(`not a reason code: ${reason}`);
    this.reason = reason;
  }
}
