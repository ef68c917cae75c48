// Web origins as the origin caveat names them and browsers send them (spec/caveats.md#origin).
//
//   origin = scheme "://" host [":" port]     scheme https or http; no path, query or userinfo
//
// The canonical form is the browser's serialisation: lower case, an A-label DNS name, a
// dotted IPv4 address or a bracketed, compressed IPv6 address, and no port when it is the
// scheme's default (443, 80). A caveat must hold that form; a request's Origin header is
// normalised to it. Anything that is not an http(s) origin (e.g. "null") matches nothing.

const DEFAULT_PORTS = { https: 443, http: 80 };
const ORIGIN = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::([0-9]{1,5}))?$/;
const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const MAX_ORIGIN = 300;

function ipv4(text) {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  const nums = parts.map((p) => (/^(?:0|[1-9][0-9]{0,2})$/.test(p) ? Number(p) : NaN));
  return nums.every((n) => n <= 255) ? nums.join('.') : null;
}

/** The 8 pieces of an IPv6 address (RFC 4291 text forms), or null. */
function ipv6Pieces(text) {
  let head = text;
  let v4 = [];
  const lastColon = text.lastIndexOf(':');
  if (text.slice(lastColon + 1).includes('.')) {
    const quad = ipv4(text.slice(lastColon + 1));
    if (quad === null) return null;
    const n = quad.split('.').map(Number);
    v4 = [(n[0] << 8) | n[1], (n[2] << 8) | n[3]];
    head = text.slice(0, lastColon) + (text[lastColon - 1] === ':' ? ':' : '');
  }
  const halves = head.split('::');
  if (halves.length > 2) return null;
  const group = (s) => (s === '' ? [] : s.split(':'));
  const left = group(halves[0]);
  const right = halves.length === 2 ? group(halves[1]) : [];
  const pieces = [...left, ...right];
  if (!pieces.every((p) => /^[0-9A-Fa-f]{1,4}$/.test(p))) return null;
  const total = pieces.length + v4.length;
  if (halves.length === 1 ? total !== 8 : total > 7) return null;
  const zeros = new Array(8 - total).fill(0);
  return [...left.map((p) => parseInt(p, 16)), ...zeros, ...right.map((p) => parseInt(p, 16)), ...v4];
}

/** RFC 5952 text: lower case, no leading zeros, the first longest run of 2+ zeros as "::". */
function ipv6(text) {
  const p = ipv6Pieces(text);
  if (p === null) return null;
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (p[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && p[j] === 0) j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  const hexes = p.map((x) => x.toString(16));
  if (best < 0) return hexes.join(':');
  return `${hexes.slice(0, best).join(':')}::${hexes.slice(best + bestLen).join(':')}`;
}

function host(text) {
  if (text.startsWith('[')) {
    const v6 = ipv6(text.slice(1, -1));
    return v6 === null ? null : `[${v6}]`;
  }
  const h = text.toLowerCase();
  if (h.length > 253 || h.endsWith('.')) return null;
  const labels = h.split('.');
  if (!labels.every((l) => LABEL.test(l))) return null;
  if (labels.every((l) => /^[0-9]+$/.test(l))) return ipv4(h);
  return h;
}

/**
 * The canonical serialisation of an http(s) origin, or null if `text` is not one.
 * @param {string} text @returns {string | null}
 */
export function normaliseOrigin(text) {
  if (typeof text !== 'string' || text.length > MAX_ORIGIN || !/^[\x00-\x7f]*$/.test(text)) return null;
  const m = ORIGIN.exec(text);
  if (m === null) return null;
  const scheme = m[1].toLowerCase();
  if (!(scheme in DEFAULT_PORTS)) return null;
  const h = host(m[2]);
  if (h === null) return null;
  if (m[3] === undefined) return `${scheme}://${h}`;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return null;
  return port === DEFAULT_PORTS[scheme] ? `${scheme}://${h}` : `${scheme}://${h}:${port}`;
}

/** True if `text` is an origin in its one canonical spelling (what an origin caveat holds). */
export function isCanonicalOrigin(text) {
  return normaliseOrigin(text) === text;
}
