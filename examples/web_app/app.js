// The Blog Assistant: a static page that uses the visitor's AI wallet.
//
// 1. "Connect your AI wallet": capwallet.connect() asks the wallet for a token (consent in a
//    popup, or a full-page redirect if popups are blocked; this page is also the redirect
//    page, so it calls handleRedirect() first thing).
// 2. The token lives in sessionStorage (survives a reload of this tab, gone with the tab;
//    never localStorage) and is the API key for the official openai SDK, pointed at the relay.
// 3. A sub-task gets an attenuated token: one cheap model, a tiny budget, ten minutes.
// 4. Refusals (budget spent, model not allowed, revoked) are shown with their reason code; a
//    call that needs the user's OK waits for their answer in the wallet and is retried once.

import {
  connect, handleRedirect, attenuate, inspect, openaiOptions, withApproval,
  App, Models, Budget, Expires, CapwalletError,
} from 'capwallet';
import OpenAI, { APIConnectionError } from 'openai';

const KEY = 'blog-assistant.connection';
const $ = (id) => document.getElementById(id);
const params = new URL(location.href).searchParams;
$('wallet-url').value = params.get('wallet') || sessionStorage.getItem(`${KEY}.wallet`) || 'http://127.0.0.1:8750';

const PERMISSIONS = {
  providers: ['openai'], models: ['gpt-4o-mini', 'gpt-4.1-mini'],
  budget: { amount: '1.00', currency: 'USD', period: 'month' },
  confirm_above: { amount: '0.01', currency: 'USD' },
  expires_in: 86400,
};

let conn = null;

function save(c) {
  conn = c;
  if (c) sessionStorage.setItem(KEY, JSON.stringify(c));
  else sessionStorage.removeItem(KEY);
  render();
}

async function render() {
  $('connect-panel').hidden = conn !== null;
  $('app-panel').hidden = conn === null;
  if (!conn) return;
  const info = await inspect(conn.token);
  const budget = info.limits.counters.find((c) => c.kind === 'budget');
  $('status').textContent = `Connected to ${conn.walletUrl ?? 'your wallet'} (token ${info.tokenId.slice(0, 8)}…)`;
  $('limits').textContent = `Models: ${(info.limits.models ?? ['any']).join(', ')}`
    + (budget ? ` · budget ${(budget.limit / 100).toFixed(2)} ${budget.unit} per ${budget.period}` : '')
    + (info.limits.origins ? ` · only from ${info.limits.origins.join(', ')}` : '')
    + (info.limits.expires ? ` · until ${new Date(info.limits.expires * 1000).toLocaleString()}` : '');
}

function showError(err) {
  const box = $('error');
  if (!err) {
    box.hidden = true;
    box.textContent = '';
    return;
  }
  // The relay's refusals carry a reason code (budget_exceeded, revoked, ...); ours carry .code.
  // A relay that answers no CORS for this origin (grant revoked or expired, or never granted
  // to this origin) is only a failed connection to the page: the browser hides the rest.
  const code = err instanceof APIConnectionError ? 'connection_refused'
    : err.error?.reason ?? err.error?.code ?? err.code ?? err.status ?? 'error';
  const friendly = {
    budget_exceeded: 'The budget you gave this app is used up.',
    revoked: 'You disconnected this app in your wallet.',
    model_not_allowed: 'This token may not use that model.',
    approval_denied: 'You said no to this call.',
    access_denied: 'You did not connect the wallet.',
    connection_refused: 'The relay did not let this page in: the grant was revoked or has expired, or this site is not the one you connected.',
    wallet_unreachable: 'Your wallet could not be reached.',
  }[code] ?? '';
  box.dataset.code = code;
  box.textContent = `${friendly} (${code}) ${err.error?.message ?? err.message ?? ''}`.trim();
  box.hidden = false;
}

function busy(on) {
  for (const b of document.querySelectorAll('#app-panel button')) b.disabled = on;
}

/** One chat completion, streamed into `out`; asks the user first when the relay says so. */
async function ask(model, maxTokens, out) {
  showError(null);
  out.textContent = '';
  busy(true);
  const client = new OpenAI({ ...openaiOptions(conn), maxRetries: 0 });
  try {
    await withApproval(conn, async (headers) => {
      const stream = await client.chat.completions.create({
        model, max_tokens: maxTokens, stream: true,
        messages: [{ role: 'user', content: $('prompt').value }],
      }, { headers });
      out.dataset.chunks = '0';
      for await (const chunk of stream) {
        out.textContent += chunk.choices[0]?.delta?.content ?? '';
        out.dataset.chunks = String(Number(out.dataset.chunks) + 1);
      }
    }, {
      onApprovalRequired: ({ approvalUrl, message }) => {
        $('approval').hidden = false;
        $('approval-text').textContent = message.split('. Approve it')[0];
        $('approval-link').href = approvalUrl ?? conn.walletUrl;
        $('approval-state').textContent = 'Waiting for your answer…';
      },
      onApproved: () => {
        $('approval-state').textContent = 'Approved: sending it now.';
      },
      pollMs: 500,
    });
    $('approval').hidden = true;
  } catch (err) {
    $('approval').hidden = true;
    showError(err);
  } finally {
    busy(false);
  }
}

$('connect').addEventListener('click', async () => {
  showError(null);
  const wallet = $('wallet-url').value.trim();
  sessionStorage.setItem(`${KEY}.wallet`, wallet);
  try {
    save(await connect({ name: 'Blog Assistant' }, PERMISSIONS, { wallet }));
  } catch (err) {
    showError(err);
  }
});

$('ask').addEventListener('click', () => ask('gpt-4o-mini', 200, $('answer')));
$('long').addEventListener('click', () => ask('gpt-4.1-mini', 16000, $('answer')));
$('disconnect').addEventListener('click', () => save(null));

$('subtask').addEventListener('click', async () => {
  showError(null);
  busy(true);
  try {
    // The sub-task (say, a third-party typo fixer) gets only what it needs, and a name: the
    // wallet's dashboard shows its calls under this app's grant as "sub-task typo fixer".
    const child = await attenuate(conn.token, [
      App('typo fixer'), Models(['gpt-4o-mini']), Budget(1, 'USD', 'total'), Expires(Math.floor(Date.now() / 1000) + 600),
    ]);
    const info = await inspect(child);
    $('subtask-panel').hidden = false;
    // Its chain id is how the dashboard tells it from this app's own token (same token id).
    $('subtask-limits').textContent = `Sub-task ${info.chainId.slice(0, 8)}: models ${info.limits.models.join(', ')}, `
      + `${info.limits.counters.length} budgets, expires in 10 minutes`;
    $('subtask-limits').dataset.chain = info.chainId;
    const sub = new OpenAI({ ...openaiOptions({ ...conn, token: child }), maxRetries: 0 });
    const r = await sub.chat.completions.create({
      model: 'gpt-4o-mini', max_tokens: 64, messages: [{ role: 'user', content: `Fix typos: ${$('prompt').value}` }],
    });
    $('subtask-answer').textContent = r.choices[0]?.message?.content ?? '';
  } catch (err) {
    showError(err);
  } finally {
    busy(false);
  }
});

// This page is also the redirect page: finish a connection first.
try {
  const result = await handleRedirect();
  if (result?.token) save(result);
} catch (err) {
  showError(err instanceof CapwalletError ? err : new CapwalletError('error', String(err)));
}
if (conn === null) {
  const kept = sessionStorage.getItem(KEY);
  conn = kept ? JSON.parse(kept) : null;
}
render();
document.body.dataset.ready = 'true';
