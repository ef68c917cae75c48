// Confirmations: when a call needs the user's yes (a token's confirm-above or ask-first), the
// relay refuses it with reason confirmation_required, an approval_request_id and an
// approval_url at the wallet. withApproval() turns that into: show the user the approval
// page, poll GET {wallet}/approvals/{id}/status with the token until the user answers, then
// retry the same call once with the X-Capwallet-Approval header. The approval is bound to the
// exact request bytes and is single-use, so the retry must send the same body. A denial, an
// expiry or a timeout throws ApprovalDeniedError / TimeoutError: it fails closed, never
// retries without the user's yes.

import { ApprovalDeniedError, TimeoutError, WalletUnreachableError } from './errors.js';

export const APPROVAL_HEADER = 'X-Capwallet-Approval';

function headerOf(headers, name) {
  if (!headers) return null;
  if (typeof headers.get === 'function') return headers.get(name);
  return headers[name] ?? headers[name.toLowerCase()] ?? null;
}

/**
 * The approval request in a refused call, or null. Reads an openai/anthropic SDK error
 * (err.error / err.headers), a fetch Response's parsed body, or a plain error body.
 * -> {requestId, approvalUrl, message}
 */
export function approvalRequest(errOrBody) {
  if (!errOrBody || typeof errOrBody !== 'object') return null;
  const body = errOrBody.error && typeof errOrBody.error === 'object' ? errOrBody.error : errOrBody;
  const inner = body.error && typeof body.error === 'object' ? body.error : body; // {error: {...}}
  const code = inner.code ?? errOrBody.code;
  const requestId = inner.approval_request_id ?? headerOf(errOrBody.headers, 'x-capwallet-approval-request');
  if (code !== 'confirmation_required' || typeof requestId !== 'string' || !/^[0-9a-f]{32}$/.test(requestId)) return null;
  return { requestId, approvalUrl: inner.approval_url ?? null, message: inner.message ?? errOrBody.message ?? '' };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Poll the wallet until the user answers approval request `requestId`; the cwa1_ approval.
 * conn: {token, walletUrl}. Throws ApprovalDeniedError (approval_denied, approval_expired,
 * approval_unknown), TimeoutError, WalletUnreachableError.
 */
export async function waitForApproval(conn, requestId, { statusUrl, timeoutMs = 10 * 60 * 1000, pollMs = 1000, fetch: fetchImpl = globalThis.fetch, signal } = {}) {
  const url = statusUrl ?? `${conn.walletUrl}/approvals/${requestId}/status`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    signal?.throwIfAborted();
    let r;
    try {
      r = await fetchImpl(url, { headers: { authorization: `Bearer ${conn.token}` }, credentials: 'omit', cache: 'no-store' });
    } catch (err) {
      throw new WalletUnreachableError(url, err?.message || 'network error');
    }
    let body = {};
    try {
      body = await r.json();
    } catch {
      // handled below
    }
    if (!r.ok) {
      throw new ApprovalDeniedError('approval_unknown', body?.message || `the wallet answered HTTP ${r.status}`);
    }
    if (body.status === 'approved' && typeof body.approval === 'string') return body.approval;
    if (body.status === 'denied') throw new ApprovalDeniedError('approval_denied', 'the user denied this request');
    if (body.status !== 'pending') throw new ApprovalDeniedError('approval_expired', `the approval request is ${body.status ?? 'gone'}`);
    if (Date.now() >= deadline) throw new TimeoutError('the user (approval)');
    await sleep(pollMs);
  }
}

/**
 * Run `call(headers)`; if it is refused with confirmation_required, tell the user
 * (`onApprovalRequired({requestId, approvalUrl, message})`; by default, in a browser, opens
 * the approval page in a new window), wait for the answer and run `call` once more with
 * {'X-Capwallet-Approval': approval}. `call` must send the same request both times.
 */
export async function withApproval(conn, call, options = {}) {
  try {
    return await call({});
  } catch (err) {
    const req = approvalRequest(err);
    if (req === null) throw err;
    const notify = options.onApprovalRequired ?? defaultNotify;
    await notify(req);
    const statusUrl = req.approvalUrl ? `${req.approvalUrl.replace(/\/+$/, '')}/status` : undefined;
    const approval = await waitForApproval(conn, req.requestId, { ...options, statusUrl });
    options.onApproved?.(req);
    return call({ [APPROVAL_HEADER]: approval });
  }
}

function defaultNotify(req) {
  if (req.approvalUrl && typeof globalThis.window?.open === 'function') {
    globalThis.window.open(req.approvalUrl, 'capwallet-approval', 'popup,width=520,height=760');
  }
}
