// capwallet's pages: the one script they load (CSP script-src 'self').
//
// Why it exists (spec/security.md, "Loopback ports share cookies"): a browser sends the
// wallet's cookie to every port of 127.0.0.1, so the cookie alone signs nobody in. The session
// also needs a secret that this origin keeps in localStorage (origin = scheme, host AND port,
// so no other port can read it). This script is the only thing that sends it, in the
// x-capwallet-session header, on every request that reads or changes anything:
//
// * /login#<sign-in secret>: posts the secret (a fragment never leaves the browser), keeps the
//   session secret the wallet answers, and goes on to the page that asked for sign-in;
// * every other page arrives as a shell with no data: the script fetches the same URL with the
//   header and shows the top bar, title and main part of the page it gets back;
// * forms are posted with fetch and the header; the wallet answers {"location": ...} where a
//   plain form post would have been redirected (a fetch must not follow a redirect to an app).

const SECRET_KEY = "capwallet.session";
const NEXT_KEY = "capwallet.next";
const HEADER = "x-capwallet-session";

/** @returns {string} the session secret of this origin, or "-" when there is none */
function secret() {
  try {
    return localStorage.getItem(SECRET_KEY) || "-";
  } catch {
    return "-";
  }
}

/**
 * fetch() on the wallet's own origin, with the session header.
 * @param {string} url
 * @param {RequestInit} [init]
 * @returns {Promise<Response>}
 */
function walletFetch(url, init = {}) {
  const headers = new Headers(init.headers);
  headers.set(HEADER, secret());
  return fetch(url, {
    ...init, headers, credentials: "same-origin", redirect: "manual", cache: "no-store",
  });
}

/**
 * A path on this origin, or null (the place to go after sign-in must be our own page).
 * @param {unknown} value
 * @returns {string | null}
 */
function ownPath(value) {
  if (typeof value !== "string" || !value) return null;
  try {
    const url = new URL(value, location.origin);
    return url.origin === location.origin ? url.pathname + url.search + url.hash : null;
  } catch {
    return null;
  }
}

let generation = 0;

/**
 * Show a page the wallet rendered: its title, top bar and main part replace the current ones.
 * Nothing in it runs: it is parsed as an inert document and only its nodes are moved.
 * @param {string} html
 */
function show(html) {
  generation += 1;
  const doc = new DOMParser().parseFromString(html, "text/html");
  if (doc.title) document.title = doc.title;
  for (const selector of ["header.topbar", "main"]) {
    const fresh = doc.querySelector(selector);
    const old = document.querySelector(selector);
    if (fresh && old) old.replaceWith(document.adoptNode(fresh));
  }
  const refresh = doc.querySelector('meta[http-equiv="refresh"]');
  const seconds = refresh ? parseInt(refresh.getAttribute("content") || "", 10) : NaN;
  if (seconds > 0) {
    const mine = generation;
    setTimeout(() => { if (mine === generation) load(); }, seconds * 1000);
  }
  if (location.hash.length > 1) {
    document.getElementById(decodeURIComponent(location.hash.slice(1)))?.scrollIntoView();
  }
  document.documentElement.dataset.wallet = "ready";
}

/** @param {string} message */
function showFailure(message) {
  const main = document.querySelector("main");
  if (!main) return;
  const section = document.createElement("section");
  section.className = "card message error";
  const h1 = document.createElement("h1");
  h1.textContent = "The wallet did not answer";
  const p = document.createElement("p");
  p.textContent = message;
  section.append(h1, p);
  main.replaceChildren(section);
  document.documentElement.dataset.wallet = "ready";
}

/**
 * Act on the wallet's answer: a JSON instruction (go somewhere, keep or forget the session
 * secret) or a page to show.
 * @param {Response} response
 */
async function handle(response) {
  const type = response.headers.get("content-type") || "";
  if (type.startsWith("application/json")) {
    const body = await response.json();
    if (body && typeof body.session === "string") {
      localStorage.setItem(SECRET_KEY, body.session);
    }
    if (body && body.forget === true) localStorage.removeItem(SECRET_KEY);
    if (body && typeof body.location === "string") {
      let target = body.location;
      if (body.session) {
        target = ownPath(localStorage.getItem(NEXT_KEY)) || target;
        localStorage.removeItem(NEXT_KEY);
      }
      location.assign(target);
      return;
    }
  }
  if (response.status === 401) {
    // Locked: remember this page to come back to it after sign-in; a stored secret that
    // no longer works (ended, expired) is dropped.
    localStorage.setItem(NEXT_KEY, location.pathname + location.search + location.hash);
    localStorage.removeItem(SECRET_KEY);
  }
  show(await response.text());
}

/** Fetch and show the content of the page at the current URL. */
async function load() {
  try {
    await handle(await walletFetch(location.pathname + location.search));
  } catch (err) {
    showFailure(`Is capwallet still running? (${err})`);
  }
}

/** /login#<secret>: trade the sign-in secret for a session. */
async function login() {
  const offered = location.hash.slice(1);
  history.replaceState(null, "", location.pathname);  // the secret leaves the address bar
  try {
    await handle(await fetch("/login", {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ secret: offered }),
    }));
  } catch (err) {
    showFailure(`Is capwallet still running? (${err})`);
  }
}

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || form.method.toLowerCase() !== "post") return;
  event.preventDefault();
  const submitter = event.submitter instanceof HTMLElement ? event.submitter : null;
  const body = new URLSearchParams();
  for (const [name, value] of new FormData(form, submitter)) {
    if (typeof value === "string") body.append(name, value);
  }
  const buttons = form.querySelectorAll("button");
  buttons.forEach((b) => { b.disabled = true; });
  walletFetch(form.action, { method: "POST", body })
    .then(handle)
    .catch((err) => showFailure(`Nothing was sent. (${err})`))
    .finally(() => buttons.forEach((b) => { b.disabled = false; }));
});

// --- passkeys (hosted wallet; passkeys.py) -------------------------------------------------
// The options come from the wallet as WebAuthn JSON and the browser's answer goes back as
// JSON (PublicKeyCredential.parse*OptionsFromJSON / toJSON); py_webauthn checks it there.

/** @param {string} text */
function passkeyStatus(text) {
  const el = document.getElementById("passkey-status");
  if (el) el.textContent = text;
}

/**
 * POST JSON to the wallet; the answer is JSON.
 * @param {string} url
 * @param {object} body
 * @param {boolean} withSession
 */
async function postJson(url, body, withSession) {
  const init = {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  };
  return withSession ? walletFetch(url, init)
    : fetch(url, { ...init, credentials: "same-origin", cache: "no-store" });
}

/** @param {Response} response */
async function failed(response) {
  let message = `the wallet answered ${response.status}`;
  try {
    const body = await response.json();
    if (body && typeof body.message === "string") message = body.message;
  } catch { /* not JSON */ }
  passkeyStatus(`Not signed in: ${message}`);
}

async function passkeySignIn() {
  passkeyStatus("Waiting for your passkey…");
  try {
    const start = await postJson("/signin/passkey/options", {}, false);
    if (!start.ok) return failed(start);
    const { ceremony, publicKey } = await start.json();
    const credential = await navigator.credentials.get({
      publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(publicKey),
    });
    if (!(credential instanceof PublicKeyCredential)) return passkeyStatus("No passkey chosen.");
    const answer = await postJson("/signin/passkey", { ceremony, credential: credential.toJSON() },
      false);
    if (!answer.ok) return failed(answer);
    await handle(answer);
  } catch (err) {
    passkeyStatus(`Not signed in: ${err}`);
  }
}

/** @param {HTMLFormElement} form */
async function passkeyRegister(form) {
  const data = new FormData(form);
  const csrf = String(data.get("csrf") || "");
  passkeyStatus("Waiting for your authenticator…");
  try {
    const start = await postJson("/passkeys/register/options", { csrf }, true);
    if (!start.ok) return failed(start);
    const { ceremony, publicKey } = await start.json();
    const credential = await navigator.credentials.create({
      publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(publicKey),
    });
    if (!(credential instanceof PublicKeyCredential)) return passkeyStatus("Nothing was added.");
    const answer = await postJson("/passkeys/register", {
      csrf, ceremony, credential: credential.toJSON(), name: String(data.get("name") || ""),
    }, true);
    if (!answer.ok) return failed(answer);
    await handle(answer);
  } catch (err) {
    passkeyStatus(`Nothing was added: ${err}`);
  }
}

document.addEventListener("click", (event) => {
  const target = event.target instanceof Element ? event.target.closest("[data-passkey]") : null;
  if (target && target.getAttribute("data-passkey") === "signin") {
    event.preventDefault();
    passkeySignIn();
  }
});

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.passkey === "register") {
    event.preventDefault();
    passkeyRegister(form);
  }
});

if (document.getElementById("wallet-shell")) {
  if (location.pathname === "/login") login();
  else load();
}

// --- approvals waiting: a browser notification while the dashboard is open -------------------
// The dashboard carries #approval-watch; while it is shown, the script asks the wallet every
// POLL_MS how many approvals wait (GET /api/pending, with the session header) and, when the
// number grows and the user allowed notifications (the "Notify me" button), shows one.

const POLL_MS = 5000;
let watching = false;
let lastPending = -1;

function notificationsAllowed() {
  return typeof Notification !== "undefined" && Notification.permission === "granted";
}

async function checkPending() {
  const watch = document.getElementById("approval-watch");
  if (!watch) { watching = false; return; }
  try {
    const response = await walletFetch("/api/pending");
    if (response.ok) {
      const body = await response.json();
      const count = typeof body.count === "number" ? body.count : 0;
      if (lastPending >= 0 && count > lastPending && notificationsAllowed()) {
        const note = new Notification("capwallet: an app is waiting for your approval", {
          body: count === 1 ? "1 request is waiting." : `${count} requests are waiting.`,
          tag: "capwallet-approvals",
        });
        note.onclick = () => { window.focus(); location.assign("/approvals"); };
      }
      lastPending = count;
      const state = document.getElementById("approval-watch-state");
      if (state) {
        state.textContent = notificationsAllowed()
          ? "Notifications are on while this page is open."
          : "Get a notification when an app waits for your approval:";
      }
      const button = document.getElementById("approval-notify");
      if (button) button.hidden = notificationsAllowed();
    }
  } catch { /* the wallet is restarting: try again */ }
  setTimeout(checkPending, POLL_MS);
}

new MutationObserver(() => {
  if (!watching && document.getElementById("approval-watch")) {
    watching = true;
    lastPending = Number(document.getElementById("approval-watch")?.dataset.pending ?? -1);
    checkPending();
  }
}).observe(document.documentElement, { childList: true, subtree: true });

document.addEventListener("click", (event) => {
  const target = event.target instanceof Element ? event.target.closest("#approval-notify") : null;
  if (!target || typeof Notification === "undefined") return;
  event.preventDefault();
  Notification.requestPermission().then(() => checkPending());
});
