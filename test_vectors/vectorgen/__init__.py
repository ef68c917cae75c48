"""The capwallet v1 conformance vector generator, one module per vector file.

Run it as ``python test_vectors/generate.py [--check]``.

Layout: seeds (fixed keys, ids, times), encoder (an independent token encoder), requests
(requests and expectations in their JSON form), approvals (an independent approval encoder),
files (flags, ids, the document), check (every vector against the implementation), one module
per file (encoding, mint, attenuate, verify, negative, budget, approval) and cli.

Every input is fixed (root keys, token ids, times, nonces, approval ids), so the output is
reproducible byte for byte. Tokens are assembled here with an independent encoder and HMAC
chain and cross-checked against capwallet.token.mint / Token.attenuate. Every expected result
(reason, the counter a denial names, debits, counter states, effective limits) is written
here by hand, and the generator stops if the Python implementation disagrees: the vectors say
what the spec says, not what the code happens to do.

Money (spec/caveats.md#currencies): a request's cost and every budget counter value (debit
amount, limit and used; counter states) is in microunits, millionths of a minor unit, while
caveat amounts and effective limits stay in minor units. Amounts are written here by hand in
minor units where a whole number of minor units is meant, and scaled by MICROS at the JSON
boundary (call(cost=...), debit(...) of a budget, counter states keyed by a budget's counter
key); Micros(n) marks a value written directly in microunits, which is never scaled.

Ids are assigned in order within each file, so new vectors go at the END of their file and
existing ids never change meaning.
"""
