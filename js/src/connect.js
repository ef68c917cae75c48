// Connecting a web page to the user's wallet: OAuth 2.0 authorization code with PKCE
// (RFC 6749, 7636), the consent page in a popup, or a full-page redirect when the browser
// blocks popups.
//
// Popup: connect() opens the window synchronously (inside the click that called it, or the
// popup blocker stops it), then sends it to the wallet's consent page. The wallet redirects
// the popup to the app's redirect page, whose handleRedirect() hands {code, state, iss} to
// the page that opened it over a BroadcastChannel (window.opener is gone by then: the
// wallet's pages are cross-origin-isolated from their opener), and closes the window. The
// opener checks `state` and `iss` and exchanges the code; the PKCE verifier never leaves its
// memory. Redirect: the verifier and state wait in sessionStorage (this tab only) while the
// tab visits the wallet; handleRedirect() on return exchanges the code itself.
//
// Design note: written by hand, not with oauth4webapi. The OAuth part is one PKCE pair, one
// form POST and one metadata fetch; the work is the popup/redirect/BroadcastChannel state
// machine, which oauth4webapi leaves to the caller, and oauth4webapi refuses plain-http
// endpoints without a per-call opt-out, while the wallet's default address is
// http://127.0.0.1. Zero runtime dependencies.

import { b64urlEncode, utf8 } from './token/encoding.js';
import { sha256 } from './token/macaroon.js';
import { DEFAULT_WALLET_URL, baseUrl, discover } from './discovery.js';
import {
  AccessDeniedError, CapwalletError, IssuerMismatchError, OAuthError, PopupClosedError,
  StateMismatchError, TimeoutError, WalletUnreachableError,
} from './errors.js';

const CHANNEL = 'capwallet-oauth';
const PENDING = 'capwallet:pending:';
const POPUP_NAME = 'capwallet-consent';
const DEFAULT_TIMEOUT_MS = 5 * 60 * 1000;
const ACK_WAIT_MS = 3000;

/** A random base64url string of `bytes` random bytes (WebCrypto). */
export function randomToken(bytes = 32) {
  return b64urlEncode(globalThis.crypto.getRandomValues(new Uint8Array(bytes)));
}

/** {verifier, challenge}: RFC 7636 S256. */
export async function pkcePair() {
  const verifier = randomToken(32);
  return { verifier, challenge: b64urlEncode(await sha256(utf8(verifier))) };
}

function sameString(a, b) {
  if (typeof a !== 'string' || typeof b !== 'string' || a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

function defaultRedirectUri() {
  const here = new URL(globalThis.location.href);
  return `${here.origin}${here.pathname}`;
}

/**
 * Exchange an authorization code at the wallet's token endpoint; the connection.
 * Throws WalletUnreachableError or OAuthError (invalid_grant for a used or expired code).
 */
export async function exchangeCode({ tokenEndpoint, issuer, code, verifier, redirectUri, fetch: fetchImpl = globalThis.fetch }) {
  let r;
  try {
    r = await fetchImpl(tokenEndpoint, {
      method: 'POST', credentials: 'omit',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: new URLSearchParams({
        grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier,
      }).toString(),
    });
  } catch (err) {
    throw new WalletUnreachableError(tokenEndpoint, err?.message || 'network error');
  }
  let body = {};
  try {
    body = await r.json();
  } catch {
    // not JSON: handled below
  }
  if (!r.ok || typeof body?.access_token !== 'string') {
    throw new OAuthError(body?.error || `http_${r.status}`, body?.error_description || `the token endpoint answered HTTP ${r.status}`);
  }
  const granted = Array.isArray(body.authorization_details) ? body.authorization_details[0] ?? {} : {};
  const expiresIn = Number.isSafeInteger(body.expires_in) ? body.expires_in : null;
  return {
    token: body.access_token,
    relayUrl: typeof body.relay_url === 'string' ? baseUrl(body.relay_url) : issuer,
    granted,
    expiresAt: expiresIn === null ? null : Math.floor(Date.now() / 1000) + expiresIn,
    grantId: body.grant_id ?? null,
    walletUrl: issuer,
  };
}

function checkAnswer(params, pending) {
  if (!sameString(params.state, pending.state)) throw new StateMismatchError();
  if (params.iss && baseUrl(params.iss) !== pending.issuer) throw new IssuerMismatchError(pending.issuer, params.iss);
  if (params.error === 'access_denied') throw new AccessDeniedError(params.error_description || undefined);
  if (params.error) throw new OAuthError(params.error, params.error_description);
  if (!params.code) throw new OAuthError('invalid_request', 'the wallet answered without a code');
}

/**
 * Ask the user's wallet for permission to use AI. Call it from a click handler.
 *
 * appInfo: {name, redirectUri?, clientId?} (redirectUri defaults to this page's URL without
 * query; that page must call handleRedirect() when it loads). request: the permissions
 * (providers, models, budget, ...; capwallet.wallet.permissions). options: {wallet (a wallet
 * or relay URL, default http://127.0.0.1:8750), popup (default true), timeoutMs}.
 *
 * Resolves to {token, relayUrl, granted, expiresAt, grantId, walletUrl}. In redirect mode
 * the page navigates away and the promise never settles: handleRedirect() on return gives
 * the connection instead.
 */
export async function connect(appInfo, request = {}, options = {}) {
  const w = globalThis.window;
  if (!w?.location) throw new CapwalletError('unsupported', 'connect() runs in a browser page');
  if (!appInfo?.name) throw new CapwalletError('invalid_argument', 'appInfo.name is required');
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  // Open the window now, while the click still counts as a user gesture.
  const popup = options.popup === false ? null
    : w.open('', POPUP_NAME, 'popup,width=520,height=760');
  try {
    const wallet = await discover(options.wallet ?? DEFAULT_WALLET_URL, { fetch: options.fetch });
    const { verifier, challenge } = await pkcePair();
    const state = randomToken(24);
    const redirectUri = appInfo.redirectUri ?? defaultRedirectUri();
    const query = new URLSearchParams({
      response_type: 'code', app_name: appInfo.name, redirect_uri: redirectUri, state,
      code_challenge: challenge, code_challenge_method: 'S256',
      authorization_details: JSON.stringify([{ type: 'capwallet_ai', ...request }]),
    });
    // A page is a web app: its client_id is its origin (the wallet binds the grant to it and
    // answers /token's CORS for it alone), or the URL of its Client ID Metadata Document.
    query.set('client_id', appInfo.clientId ?? w.location.origin);
    const url = `${wallet.authorizationEndpoint}?${query}`;
    const pending = { state, verifier, redirectUri, issuer: wallet.issuer, tokenEndpoint: wallet.tokenEndpoint };
    if (!popup || popup.closed) {
      sessionStorage.setItem(PENDING + state, JSON.stringify({ ...pending, mode: 'redirect', at: Date.now() }));
      w.location.assign(url);
      return new Promise(() => {}); // the page is leaving
    }
    popup.location.href = url;
    const params = await waitForAnswer(popup, state, timeoutMs);
    checkAnswer(params, pending);
    return await exchangeCode({ ...pending, code: params.code, fetch: options.fetch });
  } catch (err) {
    try {
      popup?.close();
    } catch {
      // already gone
    }
    throw err;
  }
}

function waitForAnswer(popup, state, timeoutMs) {
  return new Promise((resolve, reject) => {
    const channel = new BroadcastChannel(CHANNEL);
    let closedSince = null;
    const finish = (fn, value) => {
      clearTimeout(timer);
      clearInterval(watch);
      channel.close();
      fn(value);
    };
    channel.onmessage = (event) => {
      const m = event.data;
      if (m?.type !== 'capwallet:answer' || !sameString(m.params?.state, state)) return;
      channel.postMessage({ type: 'capwallet:ack', state });
      finish(resolve, m.params);
    };
    const timer = setTimeout(() => finish(reject, new TimeoutError('the consent page')), timeoutMs);
    // popup.closed is also true for a window the browser isolated from its opener (a page
    // with a cross-origin-opener-policy; the wallet's consent page sends unsafe-none so this
    // does not happen there). So "closed" counts only once the popup was seen open on the
    // wallet's origin (reading its location throws), has read closed for over a second, and
    // the user is back on this page (focus returned to it).
    let seenOpen = false;
    const watch = setInterval(() => {
      if (!popup.closed) {
        closedSince = null;
        try {
          void popup.location.href; // readable while still about:blank (same origin)
        } catch {
          seenOpen = true;
        }
        return;
      }
      closedSince ??= Date.now();
      const back = globalThis.document?.hasFocus?.() ?? true;
      if (seenOpen && back && Date.now() - closedSince > 1000) finish(reject, new PopupClosedError());
    }, 200);
  });
}

/** The OAuth answer in this page's URL: {code, state, iss, error, error_description} or null. */
function answerInUrl() {
  const q = new URL(globalThis.location.href).searchParams;
  if (!q.has('state') || (!q.has('code') && !q.has('error'))) return null;
  const params = {};
  for (const k of ['code', 'state', 'iss', 'error', 'error_description']) {
    if (q.has(k)) params[k] = q.get(k);
  }
  return params;
}

function cleanUrl() {
  const u = new URL(globalThis.location.href);
  for (const k of ['code', 'state', 'iss', 'error', 'error_description']) u.searchParams.delete(k);
  globalThis.history?.replaceState(globalThis.history.state, '', u.toString());
}

function redirectPending() {
  const out = [];
  for (let i = 0; i < sessionStorage.length; i++) {
    const key = sessionStorage.key(i);
    if (key?.startsWith(PENDING)) out.push(key);
  }
  return out;
}

/**
 * Call on the app's redirect page when it loads. Without an OAuth answer in the URL: null.
 * In the consent popup: hands the answer to the page that opened it and closes the window
 * (resolves to {handled: 'popup'}). After a full-page redirect: checks state and iss,
 * exchanges the code, and resolves to the connection. Throws StateMismatchError for an
 * answer this browser tab did not ask for, AccessDeniedError, OAuthError, ...
 */
export async function handleRedirect(options = {}) {
  const params = answerInUrl();
  if (params === null) return null;
  cleanUrl(); // the code is single-use: keep it out of history and bookmarks
  const key = PENDING + params.state;
  const stored = sessionStorage.getItem(key);
  if (stored !== null) {
    sessionStorage.removeItem(key);
    const pending = JSON.parse(stored);
    checkAnswer(params, pending);
    return exchangeCode({ ...pending, code: params.code, fetch: options.fetch });
  }
  if (redirectPending().length > 0) throw new StateMismatchError();
  // A popup: find the page that is waiting for this state.
  const acked = await new Promise((resolve) => {
    const channel = new BroadcastChannel(CHANNEL);
    const timer = setTimeout(() => {
      channel.close();
      resolve(false);
    }, options.ackWaitMs ?? ACK_WAIT_MS);
    channel.onmessage = (event) => {
      if (event.data?.type === 'capwallet:ack' && sameString(event.data.state, params.state)) {
        clearTimeout(timer);
        channel.close();
        resolve(true);
      }
    };
    channel.postMessage({ type: 'capwallet:answer', params });
  });
  if (!acked) throw new StateMismatchError('no page of this app is waiting for this answer (state mismatch, or the page that asked was closed)');
  if (options.close !== false) globalThis.close?.();
  return { handled: 'popup' };
}
