// Which time-zone names a caveat may use (spec/caveats.md#time-zones).
//
// A name is valid if it is, byte for byte, a Zone or Link name of the IANA tz database.
// JavaScript's Intl matches names case-insensitively and also accepts names that are not in
// the tz database (ICU's "PST", "SystemV/AST4"), so Intl alone cannot decide validity: the
// name list is read from the tz database's own compact source, tzdata.zi, which ships with it
// (the same files Python's zoneinfo reads). The rules themselves are applied by Intl (ICU).
//
// A browser has no tz database files: there the list is Intl.supportedValuesOf('timeZone'),
// matched byte for byte. It holds the canonical names only, so a browser refuses a Link name
// (Asia/Calcutta) a server accepts: stricter, never looser (a browser only inspects and
// attenuates tokens; the relay verifies them with the full list).

const NODE = typeof globalThis.process?.versions?.node === 'string';
// The places zoneinfo looks (CPython's default TZPATH), after $TZDIR.
const SEARCH = NODE ? [
  globalThis.process.env.TZDIR, '/usr/share/zoneinfo', '/usr/lib/zoneinfo', '/usr/share/lib/zoneinfo',
  '/etc/zoneinfo',
].filter(Boolean) : [];
// Read once at load time; the specifier is a variable so that bundlers for browsers leave it.
const fs = NODE ? await import(/* webpackIgnore: true */ ['node', 'fs'].join(':')) : null;

let names = null;

function load() {
  if (!NODE) return new Set(Intl.supportedValuesOf?.('timeZone') ?? []);
  for (const dir of SEARCH) {
    let text;
    try {
      text = fs.readFileSync(`${dir}/tzdata.zi`, 'utf8');
    } catch {
      continue;
    }
    const found = new Set();
    for (const line of text.split('\n')) {
      const f = line.split(' ');
      if (f[0] === 'Z') found.add(f[1]); // Z NAME STDOFF RULES FORMAT [UNTIL]
      else if (f[0] === 'L') found.add(f[2]); // L TARGET LINK-NAME
    }
    return found;
  }
  return new Set(); // no tz database: every named zone is invalid (fail closed)
}

/** True if `name` is a tz database Zone or Link name that this runtime's Intl can apply. */
export function isTzName(name) {
  if (names === null) names = load();
  if (!names.has(name)) return false;
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: name });
    return true;
  } catch {
    return false;
  }
}
