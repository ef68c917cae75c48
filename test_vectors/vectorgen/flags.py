"""Every flag a vector can carry, with the note each file prints for it (Wycheproof style).

Declared once, here, so any vector file can use any flag and the notes never disagree."""

from __future__ import annotations

from .files import flag
from .seeds import MAX_MINOR

# encoding.json
VALID = flag("Valid", "A well-formed token (or approval) that verifies; the request is allowed.")
SIG = flag("SignatureTamper", "Signature bits changed; the HMAC chain no longer matches.")
CAV_TAMPER = flag("CaveatTamper", "Caveats dropped, reordered, duplicated or truncated without "
                  "re-signing; the HMAC chain no longer matches.")
ID_TAMPER = flag("IdentifierTamper", "Identifier bytes changed without re-signing.")
WRONG_KEY = flag("WrongKey", "Signed under a different secret than the verifier holds for "
                 "that key id.")
UNKNOWN_KEY = flag("UnknownKey", "The identifier names a root key id the verifier does not hold.")
ROTATION = flag("KeyRotation", "The verifier holds several root keys and picks one by key id.")
TRAILING = flag("TrailingBytes", "Bytes after the signature field.")
BASE64 = flag("Base64", "The text after the prefix is not canonical unpadded base64url.")
PREFIX_F = flag("Prefix", "The string does not start with exactly 'cwt1_'.")
V1 = flag("MacaroonV1", "A libmacaroons v1 (text packet) macaroon, not accepted.")
LOCATION = flag("LocationField", "A location field (type 1) is present; it must be absent.")
THIRD = flag("ThirdPartyCaveat", "A third-party caveat (verification id or caveat location).")
SIZE = flag("SizeLimit", "A size limit: token characters, caveat count or caveat bytes.")
VARINT = flag("NonMinimalVarint", "A field length varint that is not minimal or is too long.")
IDLEN = flag("IdentifierLength", "The identifier is not exactly 33 bytes.")
VERSION = flag("UnsupportedVersion", "The identifier's version byte is not 0x01.")
STRUCT = flag("Structure", "Macaroon fields missing, out of order, of the wrong type or "
              "running past the end.")
BOUNDARY = flag("Boundary", "A value exactly at (or one past) a limit.")

# mint.json
MINT = flag("Mint", "Rebuild the token from the root key, the identifier fields and the caveat "
            "bytes: the derived key, every chain step and the token string must match.")
TYPED = flag("TypedCaveat", "The caveat bytes are what the typed constructor encodes (values "
             "sorted, arguments percent-encoded, defaults omitted).")

# attenuate.json
ATT = flag("Attenuate", "The token is the parent with caveats appended: rebuild it from 'parent' "
           "and 'attenuate' (no root key needed) and compare.")
CHAIN = flag("Chain", "A parent -> child -> grandchild chain: every level's caveats apply.")
SIBLING = flag("Sibling", "Two tokens attenuated from one parent.")
WIDEN = flag("WideningAttempt", "A child adds a caveat that would widen its parent; the "
             "parent's caveat still applies.")
COMBINE = flag("Combine", "Several caveats of one type combine into one effective limit.")

# verify.json
SKEW = flag("ClockSkew", "A time exactly at, or one second past, the 60-second leeway.")
ORDER = flag("CheckOrder", "Several checks fail; the first in reason-code order decides.")
RESOURCE = flag("ResourceAccess", "A resource access (no provider): only scopes, ask-first and "
                "time apply; no counters are debited.")
ZERO = flag("ZeroCost", "A request whose amount on a counter is 0 is never blocked by it.")
REVOKE = flag("Revocation", "The verifier's revocation list names the token id.")
EXACT = flag("ExactMatch", "Names match exactly: no case folding, no prefix matching.")
MICRO = flag("Microunits", "An amount that is not a whole number of minor units: costs and "
             "budget counters count microunits, millionths of a minor unit.")
COUNTER_ORDER = flag("CounterOrder", "Several counters do not fit the call; the denial names "
                     "the first in check order (rates, then quotas, then budgets; token order "
                     "within a kind).")

# negative.json
UNKNOWN_TYPE = flag("UnknownType", "The caveat's name is not in the registry.")
NONCANON_INT = flag("NonCanonicalInteger", "An integer with a leading zero, a sign, a point, "
                    "an exponent, or outside 0..2^53-1.")
UNSORTED = flag("UnsortedList", "A name list not in strictly ascending byte order (unsorted or "
                "with duplicates), or empty where a value is required.")
PCT = flag("PercentEncoding", "A percent-escape that is not the one canonical spelling.")
SPACE = flag("Whitespace", "A space where the grammar has none, or two where it has one.")
NONASCII = flag("NonAscii", "Bytes outside ASCII in the caveat, or a decoded value that is not "
                "UTF-8.")
ARGS = flag("ArgumentCount", "Too few or too many arguments for the caveat type.")
BADVALUE = flag("BadValue", "An argument that is not one of the values the type accepts "
                "(period, currency, time zone, nonce, logging level).")
CONTROL = flag("Control", "A valid caveat next to the invalid ones it resembles.")
AMOUNT = flag("AmountRange", f"A budget or confirm-above amount above {MAX_MINOR} minor units, "
              "whose value in microunits would pass 2^53-1.")

# budget.json
SEQ = flag("Sequence", "Steps share counter state: after an allowed step, each debit's amount "
           "is added to its counter (absent counters start at 0).")
TZF = flag("TimeZone", "A calendar period in an IANA time zone other than UTC.")
DST = flag("DaylightSaving", "The period boundary is next to a daylight-saving transition "
           "(a local time skipped or repeated).")
ROLL = flag("PeriodRollover", "The period changes between steps, so a new counter starts.")
ISOW = flag("IsoWeek", "ISO 8601 weeks: Monday first, week-numbering year.")

# approval.json
APPROVAL_F = flag("Approval", "The request carries an approval (cwa1_...); 'approval' gives "
                  "the fields it was issued from, so it can be rebuilt and compared.")
DIGEST_F = flag("RequestDigest", "'request_digest' gives a method, path and body and the "
                "SHA-256 request digest they must produce.")
BAD_APPROVAL = flag("BadApproval", "An approval that is expired, for another token, request "
                    "or kind, under the wrong key, tampered or malformed.")
ACCESS_F = flag("AccessDigest", "'access_digest' gives the scopes, summary and request digest "
                "of a resource access and the access digest they produce.")
KIND_F = flag("ApprovalKind", "An approval presented for a request of another kind than it "
              "states (model call, resource access), or stating an unknown kind.")
ORIGIN_F = flag("Origin", "The request states a browser's Origin header (or the token has an "
                "origin caveat and the request states none): the origin caveat decides.")
FAR_FUTURE = flag("FarFuture", "The verifier's clock is at or near the last time for which "
                  "counter periods are defined (9998-01-01T00:00:00Z), or at 2^53-1.")
ASK = flag("AskFirst", "A scope named by ask-first is used.")
