#!/usr/bin/env node
// Wire compatibility with libmacaroons v2 (spec/token-format.md#layout): every correctly
// signed token in test_vectors/v1 must import and verify with the npm `macaroon` package
// (go-macaroon's js-macaroon, 3.x), an implementation of the standard format written by
// others, given its root key and a checker that accepts its caveats. It must also read the
// same identifier, caveats and signature, and must reject every tampered token.
// (Not checked: re-export. macaroon 3.0.4's exportBinary() grows its buffer without bound,
// since ByteBuffer never sets _capacity, and throws for macaroons of more than a few fields.)
//
// Usage: node check.js [VECTORS_DIR]     (default: ../../../test_vectors/v1)
// Run `npm ci` in this folder first. Exit 0 only if every check passes.
//
// Which tokens are "correctly signed" is taken from the vectors' expected results, not from
// our own verifier: a token whose expected reason is not malformed, unsupported_version,
// unknown_key or bad_signature parses and has a valid HMAC chain under a key in `keys`.

import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import macaroon from 'macaroon';

const NOT_SIGNED = new Set(['malformed', 'unsupported_version', 'unknown_key', 'bad_signature']);
const PREFIX = 'cwt1_';
const dir = process.argv[2] ?? fileURLToPath(new URL('../../../test_vectors/v1/', import.meta.url));
const version = createRequire(import.meta.url)('macaroon/package.json').version;

const hex = (bytes) => Buffer.from(bytes).toString('hex');

/** Every (token, keys, expected, caveats) use in the vectors, one per token string. */
function tokenUses() {
  const uses = new Map();
  const add = (token, v, expected, caveats) => {
    if (!uses.has(token)) uses.set(token, { token, id: v.id, keys: v.keys, expected, caveats });
  };
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.json')).sort()) {
    for (const v of JSON.parse(readFileSync(join(dir, file), 'utf8')).tests) {
      const caveats = v.caveats?.map((c) => c.hex);
      if (v.steps) {
        for (const s of v.steps) add(s.token ?? v.token, v, s.expected, s.token ? undefined : caveats);
      } else {
        add(v.token, v, v.expected, caveats);
      }
      if (v.parent) add(v.parent, v, { result: 'allow' }, undefined);
    }
  }
  return [...uses.values()];
}

function signed(use) {
  return use.expected.result === 'allow' || !NOT_SIGNED.has(use.expected.reason);
}

/** Import with js-macaroon and verify with the root key its identifier names. */
function importAndVerify(use) {
  const bytes = new Uint8Array(Buffer.from(use.token.slice(PREFIX.length), 'base64url'));
  const m = macaroon.importMacaroon(bytes);
  const keyId = hex(m.identifier.slice(1, 9));
  const key = use.keys.find((k) => k.key_id === keyId);
  if (!key) throw new Error(`no root key ${keyId} in the vector`);
  const seen = [];
  m.verify(new Uint8Array(Buffer.from(key.root_key, 'hex')), (condition) => {
    seen.push(condition);
    return null; // accept every first-party caveat: this checks the chain, not the caveats
  });
  return { m, bytes, seen };
}

const failures = [];
let verified = 0;
let rejected = 0;
const uses = tokenUses();
for (const use of uses) {
  const where = `${use.id} (${use.token.slice(0, 24)}...)`;
  if (signed(use)) {
    try {
      const { m, bytes, seen } = importAndVerify(use);
      if (m.location) throw new Error(`location ${JSON.stringify(m.location)} should be absent`);
      // The last 32 bytes are the signature; the identifier follows 0x02 0x02 0x21.
      if (hex(m.identifier) !== hex(bytes.subarray(3, 36))) throw new Error('another identifier');
      if (hex(m.signature) !== hex(bytes.subarray(bytes.length - 32))) throw new Error('another signature');
      const caveatHex = m.caveats.map((c) => hex(c.identifier));
      if (use.caveats && JSON.stringify(caveatHex) !== JSON.stringify(use.caveats)) {
        throw new Error(`caveats ${caveatHex} != ${use.caveats}`);
      }
      if (seen.length !== m.caveats.length) throw new Error('the checker did not see every caveat');
      verified += 1;
    } catch (err) {
      failures.push(`${where}: a signed token does not verify: ${err.message}`);
    }
  } else if (use.expected.reason === 'bad_signature') {
    try {
      importAndVerify(use);
      failures.push(`${where}: a tampered token verifies`);
    } catch {
      rejected += 1;
    }
  }
}

for (const f of failures) console.log(`FAIL ${f}`);
console.log(`macaroon ${version}: ${verified} signed tokens imported and verified, ` +
  `${rejected} tampered tokens rejected, ${uses.length} distinct tokens in ${dir}`);
console.log(`${verified + rejected} passed, ${failures.length} failed`);
process.exit(failures.length === 0 && verified > 0 ? 0 : 1);
