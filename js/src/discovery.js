// Finding a wallet's endpoints from one URL (RFC 8414 authorization-server metadata, RFC 9728
// protected-resource metadata).
//
// The URL may be the wallet's or a relay's. A wallet publishes
// /.well-known/oauth-authorization-server; a relay publishes
// /.well-known/oauth-protected-resource naming its wallet in `authorization_servers`. The
// metadata's `issuer` must equal the URL it was fetched for (RFC 8414 section 3.3): a
// document that names another issuer is refused. A wallet that publishes no metadata (404)
// gets the conventional /authorize and /token.

import { WalletUnreachableError } from './errors.js';

export const DEFAULT_WALLET_URL = 'http://127.0.0.1:8750';
const AS_PATH = '/.well-known/oauth-authorization-server';
const PR_PATH = '/.well-known/oauth-protected-resource';

/** 'http://h:1/' -> 'http://h:1' (and refuse what is not an http(s) URL). */
export function baseUrl(url) {
  let u;
  try {
    u = new URL(url);
  } catch {
    throw new WalletUnreachableError(String(url), 'not a URL');
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new WalletUnreachableError(String(url), 'a wallet URL is http(s)');
  }
  return `${u.origin}${u.pathname.replace(/\/+$/, '')}`;
}

async function getJson(url, fetchImpl) {
  let r;
  try {
    r = await fetchImpl(url, { headers: { accept: 'application/json' }, credentials: 'omit', redirect: 'error' });
  } catch (err) {
    throw new WalletUnreachableError(url, err?.message || 'network error (is the wallet running, and does it allow this origin?)');
  }
  if (r.status === 404) return null;
  if (!r.ok) throw new WalletUnreachableError(url, `HTTP ${r.status}`);
  try {
    const doc = await r.json();
    if (doc && typeof doc === 'object' && !Array.isArray(doc)) return doc;
  } catch {
    // fall through
  }
  throw new WalletUnreachableError(url, 'the answer is not a JSON object');
}

function fromAsMetadata(base, doc, url) {
  if (typeof doc.issuer !== 'string' || baseUrl(doc.issuer) !== base) {
    throw new WalletUnreachableError(url, `the metadata names issuer ${JSON.stringify(doc.issuer)}, not ${base}`);
  }
  for (const f of ['authorization_endpoint', 'token_endpoint']) {
    if (typeof doc[f] !== 'string') throw new WalletUnreachableError(url, `the metadata has no ${f}`);
  }
  return {
    issuer: base, authorizationEndpoint: doc.authorization_endpoint, tokenEndpoint: doc.token_endpoint,
    metadata: doc,
  };
}

/**
 * The wallet behind `url` (a wallet's or a relay's): {issuer, authorizationEndpoint,
 * tokenEndpoint, relayUrl (when `url` was a relay), metadata}. Throws WalletUnreachableError
 * naming the URL it tried.
 */
export async function discover(url = DEFAULT_WALLET_URL, { fetch: fetchImpl = globalThis.fetch } = {}) {
  const base = baseUrl(url);
  const asUrl = `${base}${AS_PATH}`;
  const as = await getJson(asUrl, fetchImpl);
  if (as !== null) return { ...fromAsMetadata(base, as, asUrl), relayUrl: null };
  const prUrl = `${base}${PR_PATH}`;
  const pr = await getJson(prUrl, fetchImpl);
  if (pr !== null) {
    const wallet = Array.isArray(pr.authorization_servers) ? pr.authorization_servers[0] : undefined;
    if (typeof wallet !== 'string') throw new WalletUnreachableError(prUrl, 'the metadata names no authorization server');
    const walletBase = baseUrl(wallet);
    const walletAsUrl = `${walletBase}${AS_PATH}`;
    const doc = await getJson(walletAsUrl, fetchImpl);
    const found = doc !== null ? fromAsMetadata(walletBase, doc, walletAsUrl) : conventional(walletBase);
    return { ...found, relayUrl: typeof pr.resource === 'string' ? baseUrl(pr.resource) : base };
  }
  return { ...conventional(base), relayUrl: null };
}

function conventional(base) {
  return { issuer: base, authorizationEndpoint: `${base}/authorize`, tokenEndpoint: `${base}/token`, metadata: null };
}
