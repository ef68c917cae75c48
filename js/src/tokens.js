// Working with a token offline, without a key: inspect() reads what it allows, attenuate()
// narrows it for a sub-task. Attenuation can only add caveats, so the child can never do
// more than its parent: the relay checks every caveat of the chain.

import { parseToken, attenuate as attenuateRaw } from './token/token.js';
import { decodeAll } from './token/caveats.js';
import { effective, limitsToJson } from './token/limits.js';
import { TokenError } from './token/reasons.js';
import { hex } from './token/encoding.js';
import { chainId } from './token/macaroon.js';
import { encodeCaveat } from './caveats.js';
import { InvalidArgumentError } from './errors.js';

function tokenError(err) {
  if (err instanceof TokenError) return new InvalidArgumentError(err.message, err.reason);
  return err;
}

/**
 * A new token with `caveats` (typed values from caveats.js, e.g. [Models(['gpt-4o-mini']),
 * Budget(5, 'USD', 'total')]) appended to `token`'s. Throws InvalidArgumentError.
 */
export async function attenuate(token, caveats) {
  if (!Array.isArray(caveats) || caveats.length === 0) {
    throw new InvalidArgumentError('attenuate needs a non-empty list of caveats');
  }
  const bytes = caveats.map(encodeCaveat);
  try {
    return await attenuateRaw(token, bytes);
  } catch (err) {
    throw tokenError(err);
  }
}

/**
 * What a token says about itself, read without a key (so: claims, not yet verified; the relay
 * verifies). {tokenId, keyId, issuedAt, chainId, caveats: [typed], limits: {expires, models,
 * counters, ...}} with limits in the shape of the test vectors (snake_case, sorted name
 * lists). chainId names this chain (spec/token-format.md#chain-id): a sub-task's attenuated
 * token has its own, and the wallet's dashboard shows the sub-task's calls under it.
 */
export async function inspect(token) {
  try {
    const { identifier, raw } = parseToken(token);
    const caveats = decodeAll(raw.caveats);
    const limits = await effective(identifier.tokenId, raw.caveats.map((b, i) => [b, caveats[i]]));
    return {
      tokenId: hex(identifier.tokenId), keyId: hex(identifier.keyId), issuedAt: identifier.issuedAt,
      chainId: await chainId(raw.signature), caveats, limits: limitsToJson(limits),
    };
  } catch (err) {
    throw tokenError(err);
  }
}
