// capwallet: use the user's own AI accounts from a web app. Connect to their wallet (OAuth
// with PKCE, in a popup), get a capability token, call models through the official SDKs at
// their relay; attenuate the token for sub-tasks and inspect it offline; handle the user's
// confirmations. WebCrypto only, no runtime dependencies; Node 20+ and current browsers.

export { connect, handleRedirect, exchangeCode, pkcePair, randomToken } from './connect.js';
export { discover, DEFAULT_WALLET_URL } from './discovery.js';
export { attenuate, inspect } from './tokens.js';
export {
  NotBefore, Expires, Providers, Models, Operations, Scopes, AskFirst, ZeroRetention,
  MaxInputTokens, MaxOutputTokens, Budget, TokenQuota, Rate, ConfirmAbove, Logging, App, Origin,
  encodeCaveat,
} from './caveats.js';
export { openaiOptions, anthropicOptions } from './sdk.js';
export { withApproval, waitForApproval, approvalRequest, APPROVAL_HEADER } from './approvals.js';
export {
  CapwalletError, AccessDeniedError, WalletUnreachableError, PopupClosedError, StateMismatchError,
  TimeoutError, OAuthError, IssuerMismatchError, ApprovalDeniedError, InvalidArgumentError,
} from './errors.js';
