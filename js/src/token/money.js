// Currencies a budget or confirm-above may name: ISO 4217 codes with a known minor-unit
// exponent (spec/caveats.md#currencies, #amounts-and-microunits). Caveat amounts are integers
// in minor units, at most MAX_MINOR_AMOUNT; a request's cost and every budget counter are
// integers in microunits, millionths of a minor unit, so that a call costing a fraction of a
// cent is counted at its price instead of rounded up to a whole cent.

export const MICROS_PER_MINOR = 1_000_000;
// The largest caveat amount whose value in microunits is still at most 2^53-1 (exact in a double).
export const MAX_MINOR_AMOUNT = Math.floor(Number.MAX_SAFE_INTEGER / MICROS_PER_MINOR); // 9007199254

const EXPONENTS = new Map([
  ...('AED ARS AUD BGN BRL CAD CHF CNY COP CZK DKK EGP EUR GBP HKD HUF IDR ILS INR MAD MXN ' +
      'MYR NGN NOK NZD PEN PHP PKR PLN RON RUB SAR SEK SGD THB TRY TWD UAH USD ZAR')
    .split(' ').map((c) => [c, 2]),
  ...'CLP ISK JPY KRW UGX VND XAF XOF'.split(' ').map((c) => [c, 0]),
  ...'BHD IQD JOD KWD LYD OMR TND'.split(' ').map((c) => [c, 3]),
]);

export function isKnownCurrency(code) {
  return EXPONENTS.has(code);
}

export function formatMinor(minor, currency) {
  const exp = EXPONENTS.get(currency) ?? 0;
  if (exp === 0) return `${minor} ${currency}`;
  const s = String(minor).padStart(exp + 1, '0');
  return `${s.slice(0, -exp)}.${s.slice(-exp)} ${currency}`;
}

/** Microunits for people, without rounding: 45000 EUR -> '0.00045 EUR', 1000000 JPY -> '1 JPY'. */
export function formatMicros(micros, currency) {
  const places = (EXPONENTS.get(currency) ?? 0) + 6;
  const s = String(micros).padStart(places + 1, '0');
  const exp = places - 6;
  const frac = s.slice(-places).replace(/0+$/, '').padEnd(exp, '0');
  return frac ? `${s.slice(0, -places)}.${frac} ${currency}` : `${s.slice(0, -places)} ${currency}`;
}
