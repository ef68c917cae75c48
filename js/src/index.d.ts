// Type declarations for the capwallet package (hand-written; checked by `npx tsc -p js`).

/** What connect() gives: the token and where to use it. */
export interface Connection {
  /** The capability token (cwt1_...): the API key for the SDKs. Keep it in memory or sessionStorage. */
  token: string;
  /** The relay's base URL (the SDKs' baseURL comes from openaiOptions / anthropicOptions). */
  relayUrl: string;
  /** What the user granted (the wallet's authorization_details, possibly narrowed). */
  granted: Record<string, unknown>;
  /** Unix time (seconds) the grant expires, or null. */
  expiresAt: number | null;
  grantId?: string | null;
  /** The wallet (issuer) that granted it. */
  walletUrl?: string;
}

export interface AppInfo {
  /** Shown on the consent page (unverified unless clientId names a metadata document). */
  name: string;
  /** Where the wallet sends the answer; default: this page's URL without query. Must call handleRedirect(). */
  redirectUri?: string;
  /** An https URL of an OAuth Client ID Metadata Document on the app's origin. */
  clientId?: string;
}

/** The permissions an app asks for (the wallet's capwallet_ai authorization_details, without "type"). */
export interface PermissionRequest {
  providers?: string[];
  models?: string[];
  budget?: { amount: string; currency: string; period: 'day' | 'week' | 'month' | 'year' | 'total' };
  [field: string]: unknown;
}

export interface ConnectOptions {
  /** A wallet or relay URL; default http://127.0.0.1:8750. */
  wallet?: string;
  /** false: go straight to a full-page redirect. Default true (falls back when blocked). */
  popup?: boolean;
  /** How long to wait for the user, in ms (default 5 minutes). */
  timeoutMs?: number;
  fetch?: typeof fetch;
}

export function connect(appInfo: AppInfo, request?: PermissionRequest, options?: ConnectOptions): Promise<Connection>;
export function handleRedirect(options?: { fetch?: typeof fetch; ackWaitMs?: number; close?: boolean }): Promise<Connection | { handled: 'popup' } | null>;
export function exchangeCode(args: {
  tokenEndpoint: string; issuer: string; code: string; verifier: string; redirectUri: string; fetch?: typeof fetch;
}): Promise<Connection>;
export function pkcePair(): Promise<{ verifier: string; challenge: string }>;
export function randomToken(bytes?: number): string;

export interface WalletEndpoints {
  issuer: string;
  authorizationEndpoint: string;
  tokenEndpoint: string;
  relayUrl: string | null;
  metadata: Record<string, unknown> | null;
}
export const DEFAULT_WALLET_URL: string;
export function discover(url?: string, options?: { fetch?: typeof fetch }): Promise<WalletEndpoints>;

// --- caveats (the Python API's names) ------------------------------------------------------
export type Period = 'day' | 'week' | 'month' | 'year' | 'total';
export type Caveat =
  | { type: 'not-before' | 'expires'; time: number }
  | { type: 'providers' | 'models' | 'operations' | 'scopes' | 'ask-first'; values: string[] }
  | { type: 'zero-retention' }
  | { type: 'max-input-tokens' | 'max-output-tokens'; tokens: number }
  | { type: 'budget'; nonce: string; amount: number; currency: string; period: Period; tz: string }
  | { type: 'token-quota'; nonce: string; tokens: number; period: Period; tz: string }
  | { type: 'rate'; nonce: string; requests: number }
  | { type: 'confirm-above'; amount: number; currency: string }
  | { type: 'logging'; level: 'none' | 'metadata' | 'full' }
  | { type: 'app'; appId: string }
  | { type: 'origin'; origin: string }
  | { type: string; [field: string]: unknown };

export function NotBefore(time: number): Caveat;
export function Expires(time: number): Caveat;
export function Providers(values: string[]): Caveat;
export function Models(values: string[]): Caveat;
export function Operations(values: string[]): Caveat;
export function Scopes(values: string[]): Caveat;
export function AskFirst(values: string[]): Caveat;
export function ZeroRetention(): Caveat;
export function MaxInputTokens(tokens: number): Caveat;
export function MaxOutputTokens(tokens: number): Caveat;
/** amount in minor units (cents for USD). */
export function Budget(amount: number, currency: string, period: Period, tz?: string): Caveat;
export function TokenQuota(tokens: number, period: Period, tz?: string): Caveat;
export function Rate(requests: number): Caveat;
export function ConfirmAbove(amount: number, currency: string): Caveat;
export function Logging(level: 'none' | 'metadata' | 'full'): Caveat;
export function App(appId: string): Caveat;
/** The only web origin a browser may present the token from, e.g. 'https://notes.example'. */
export function Origin(origin: string): Caveat;
export function encodeCaveat(caveat: Caveat): Uint8Array;

export interface CounterLimit {
  kind: 'rate' | 'quota' | 'budget'; counter_id: string; limit: number; unit: string; period: string; tz: string;
}
export interface Limits {
  not_before: number | null; expires: number | null; providers: string[] | null; models: string[] | null;
  operations: string[] | null; scopes: string[] | null; ask_first: string[]; zero_retention: boolean;
  max_input_tokens: number | null; max_output_tokens: number | null; counters: CounterLimit[];
  confirm_above: Record<string, number>; logging: string | null; apps: string[];
  origins: string[] | null;
  [caveat: string]: unknown;
}
export interface TokenInfo {
  tokenId: string; keyId: string; issuedAt: number;
  /** The chain id (spec/token-format.md#chain-id): 16 hex, different for each attenuation. */
  chainId: string; caveats: Caveat[]; limits: Limits;
}
export function attenuate(token: string, caveats: Caveat[]): Promise<string>;
export function inspect(token: string): Promise<TokenInfo>;

// --- SDKs -----------------------------------------------------------------------------------
export function openaiOptions<T extends object = {}>(conn: Pick<Connection, 'token' | 'relayUrl'>, extra?: T):
  { apiKey: string; baseURL: string; dangerouslyAllowBrowser: true } & T;
export function anthropicOptions<T extends object = {}>(conn: Pick<Connection, 'token' | 'relayUrl'>, extra?: T):
  { apiKey: string; baseURL: string; dangerouslyAllowBrowser: true } & T;

// --- approvals ------------------------------------------------------------------------------
export const APPROVAL_HEADER: 'X-Capwallet-Approval';
export interface ApprovalRequest { requestId: string; approvalUrl: string | null; message: string }
export function approvalRequest(errOrBody: unknown): ApprovalRequest | null;
export interface WaitOptions { statusUrl?: string; timeoutMs?: number; pollMs?: number; fetch?: typeof fetch; signal?: AbortSignal }
export function waitForApproval(conn: Pick<Connection, 'token'> & { walletUrl?: string }, requestId: string, options?: WaitOptions): Promise<string>;
export function withApproval<R>(
  conn: Pick<Connection, 'token'> & { walletUrl?: string },
  call: (headers: Record<string, string>) => Promise<R>,
  options?: WaitOptions & {
    onApprovalRequired?: (req: ApprovalRequest) => void | Promise<void>;
    onApproved?: (req: ApprovalRequest) => void;
  },
): Promise<R>;

// --- errors ---------------------------------------------------------------------------------
export class CapwalletError extends Error { code: string; constructor(code: string, message: string, extra?: object) }
export class AccessDeniedError extends CapwalletError { code: 'access_denied'; constructor(message?: string) }
export class WalletUnreachableError extends CapwalletError { code: 'wallet_unreachable'; url: string; constructor(url: string, why?: string) }
export class PopupClosedError extends CapwalletError { code: 'popup_closed'; constructor() }
export class StateMismatchError extends CapwalletError { code: 'state_mismatch'; constructor(message?: string) }
export class TimeoutError extends CapwalletError { code: 'timeout'; constructor(what?: string) }
export class OAuthError extends CapwalletError { constructor(code: string, description?: string) }
export class IssuerMismatchError extends CapwalletError { code: 'issuer_mismatch'; constructor(expected: string, got: string) }
export class ApprovalDeniedError extends CapwalletError { constructor(code: 'approval_denied' | 'approval_expired' | 'approval_unknown', message: string) }
export class InvalidArgumentError extends CapwalletError { constructor(message: string, code?: string) }
