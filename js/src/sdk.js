// Options for the official SDKs, pointed at the user's relay with the capability token as the
// API key. Both SDKs refuse to run in a browser unless told to (they assume the key is a
// secret the page must not hold); a capwallet token is meant for the page that was granted
// it, limited by its caveats, so the flag is set. @anthropic-ai/sdk then sends
// anthropic-dangerous-direct-browser-access: true, which the relay's CORS allows.

/** new OpenAI(openaiOptions(conn)) */
export function openaiOptions(conn, extra = {}) {
  return { apiKey: conn.token, baseURL: `${conn.relayUrl.replace(/\/+$/, '')}/v1`, dangerouslyAllowBrowser: true, ...extra };
}

/** new Anthropic(anthropicOptions(conn)) */
export function anthropicOptions(conn, extra = {}) {
  return { apiKey: conn.token, baseURL: conn.relayUrl.replace(/\/+$/, ''), dangerouslyAllowBrowser: true, ...extra };
}
