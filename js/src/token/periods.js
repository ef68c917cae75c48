// Calendar periods for counters (spec/caveats.md#periods, #period-end;
// spec/budgets.md#counter-keys).
//
// A counter key names the period it counts, so a new period starts a new counter:
//   day 2026-09-21   week 2026-W39 (ISO 8601)   month 2026-09   year 2026   total total
//   minute 2026-09-21T14:13 (rates; always UTC)
// Calendar periods are in UTC unless the caveat names a tz database zone; local wall time
// comes from Intl (ICU). A period ends at the local midnight that starts the next one. When
// that midnight does not exist or happens twice (a daylight-saving change at midnight), the
// wall time is read as RFC 9557 / Temporal "compatible" (Python's fold=0): in a gap, with the
// offset in force before the change; in an overlap, the earlier instant.

const DAY = 86400;
const formatters = new Map();

function formatter(tz) {
  let f = formatters.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: tz, calendar: 'gregory', numberingSystem: 'latn', hourCycle: 'h23',
      year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric',
      second: 'numeric',
    });
    formatters.set(tz, f);
  }
  return f;
}

/** Wall-clock fields {year, month, day, hour, minute, second} of Unix time t in tz. */
export function wallClock(t, tz) {
  const d = new Date(t * 1000);
  if (Number.isNaN(d.getTime())) throw new RangeError(`time ${t} is outside the calendar`);
  if (tz === 'UTC') {
    return {
      year: d.getUTCFullYear(), month: d.getUTCMonth() + 1, day: d.getUTCDate(),
      hour: d.getUTCHours(), minute: d.getUTCMinutes(), second: d.getUTCSeconds(),
    };
  }
  const out = {};
  for (const p of formatter(tz).formatToParts(d)) {
    if (p.type in WANTED) out[p.type] = Number(p.value);
  }
  return out;
}
const WANTED = { year: 1, month: 1, day: 1, hour: 1, minute: 1, second: 1 };

/** Wall-clock fields as if they were UTC: seconds since the epoch. */
function asUtc({ year, month, day, hour = 0, minute = 0, second = 0 }) {
  return Date.UTC(year, month - 1, day, hour, minute, second) / 1000;
}

/** UTC offset in seconds of tz at Unix time t. */
function offset(t, tz) {
  return tz === 'UTC' ? 0 : asUtc(wallClock(t, tz)) - t;
}

/** The Unix time of a local wall time, "compatible" disambiguation (see header). */
export function instantOf(wall, tz) {
  const local = asUtc(wall);
  const before = offset(local - DAY, tz);
  const after = offset(local + DAY, tz);
  const matches = [...new Set([local - before, local - after])]
    .filter((t) => asUtc(wallClock(t, tz)) === local);
  if (matches.length) return Math.min(...matches);
  return local - before; // in a gap: the offset before the transition
}

function pad(n, width = 2) {
  return String(n).padStart(width, '0');
}

/** ISO 8601 week-numbering year and week of a calendar date. */
function isoWeek(year, month, day) {
  const date = Date.UTC(year, month - 1, day) / 1000;
  const weekday = (new Date(date * 1000).getUTCDay() + 6) % 7; // Monday = 0
  const thursday = new Date((date + (3 - weekday) * DAY) * 1000);
  const weekYear = thursday.getUTCFullYear();
  const week = 1 + Math.floor((thursday.getTime() / 1000 - Date.UTC(weekYear, 0, 1) / 1000) / (7 * DAY));
  return [weekYear, week, weekday];
}

/** The label of the period containing Unix time t. */
export function periodKey(period, t, tz = 'UTC') {
  if (period === 'total') return 'total';
  const w = wallClock(t, period === 'minute' ? 'UTC' : tz);
  switch (period) {
    case 'day': return `${pad(w.year, 4)}-${pad(w.month)}-${pad(w.day)}`;
    case 'week': {
      const [year, week] = isoWeek(w.year, w.month, w.day);
      return `${pad(year, 4)}-W${pad(week)}`;
    }
    case 'month': return `${pad(w.year, 4)}-${pad(w.month)}`;
    case 'year': return pad(w.year, 4);
    case 'minute': return `${pad(w.year, 4)}-${pad(w.month)}-${pad(w.day)}T${pad(w.hour)}:${pad(w.minute)}`;
    default: throw new Error(`unknown period ${period}`);
  }
}

/** Unix time at which the period containing t ends (null for total). */
export function periodEnd(period, t, tz = 'UTC') {
  if (period === 'total') return null;
  if (period === 'minute') return t - (t % 60) + 60;
  const w = wallClock(t, tz);
  let next;
  switch (period) {
    case 'day': next = { year: w.year, month: w.month, day: w.day + 1 }; break;
    case 'week': next = { year: w.year, month: w.month, day: w.day + 7 - isoWeek(w.year, w.month, w.day)[2] }; break;
    case 'month': next = { year: w.year, month: w.month + 1, day: 1 }; break;
    case 'year': next = { year: w.year + 1, month: 1, day: 1 }; break;
    default: throw new Error(`unknown period ${period}`);
  }
  // Date.UTC normalises day 32 or month 13; read the normalised date back.
  const d = new Date(asUtc(next) * 1000);
  return instantOf({ year: d.getUTCFullYear(), month: d.getUTCMonth() + 1, day: d.getUTCDate() }, tz);
}
