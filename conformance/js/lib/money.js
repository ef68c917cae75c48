// Currencies a budget or confirm-above may name: ISO 4217 codes with a known minor-unit
// exponent (spec/caveats.md#currencies). Amounts are integers in minor units.

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
