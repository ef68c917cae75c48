// Typed errors, modelled on openai-node: one base class, one subclass per failure a caller
// handles differently, each with a stable `.code` to switch on (the class for `instanceof`,
// the code for logs and for code that crosses a realm, where `instanceof` fails).

/** Every error this package throws on purpose. */
export class CapwalletError extends Error {
  /**
   * @param {string} code stable reason code
   * @param {string} message for people
   * @param {object} [extra] fields copied onto the error
   */
  constructor(code, message, extra = {}) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    Object.assign(this, extra);
  }
}

/** The user said no on the consent page (OAuth error access_denied). */
export class AccessDeniedError extends CapwalletError {
  constructor(message = 'the user denied the request') {
    super('access_denied', message);
  }
}

/** The wallet could not be reached, or answered with something that is not a wallet. */
export class WalletUnreachableError extends CapwalletError {
  /** @param {string} url the URL that was tried @param {string} [why] */
  constructor(url, why = 'no answer') {
    super('wallet_unreachable', `cannot reach the wallet at ${url}: ${why}`, { url });
  }
}

/** The user closed the consent window before answering. */
export class PopupClosedError extends CapwalletError {
  constructor() {
    super('popup_closed', 'the consent window was closed before the user answered');
  }
}

/** The answer on the redirect page does not belong to a request this page made. */
export class StateMismatchError extends CapwalletError {
  constructor(message = 'the answer does not match any request this app made (state mismatch)') {
    super('state_mismatch', message);
  }
}

/** No answer in time (the consent page, or an approval). */
export class TimeoutError extends CapwalletError {
  constructor(what = 'the wallet') {
    super('timeout', `no answer from ${what} in time`);
  }
}

/**
 * The wallet refused the exchange or the request; `.code` is its OAuth error code
 * (invalid_grant for a used or expired code, invalid_request, ...).
 */
export class OAuthError extends CapwalletError {
  constructor(code, description) {
    super(code || 'oauth_error', description || code || 'the wallet refused the request');
  }
}

/** The answer came from another wallet than the one asked (RFC 9207 `iss` mismatch). */
export class IssuerMismatchError extends CapwalletError {
  constructor(expected, got) {
    super('issuer_mismatch', `the answer came from ${got}, not from the wallet asked (${expected})`);
  }
}

/** A confirmation was denied by the user (code approval_denied) or expired (approval_expired). */
export class ApprovalDeniedError extends CapwalletError {
  constructor(code, message) {
    super(code, message);
  }
}

/** The arguments are wrong (a caveat that does not encode, a token that does not parse). */
export class InvalidArgumentError extends CapwalletError {
  constructor(message, code = 'invalid_argument') {
    super(code, message);
  }
}
