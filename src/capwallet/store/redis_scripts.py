"""The Lua scripts of the Redis store (capwallet.store.redis explains the key layout).

Each script runs atomically inside Redis, so a check and the writes that depend on it cannot
interleave with another relay's. Every key a script touches carries the same hash tag (the
token's bucket, or the pending-approvals tag), so on Redis Cluster they share one slot. Keys
found at run time (counter keys named in a reservation, per-token ledger indexes) are built from
the ``tag`` argument, which is that same hash tag: Redis Cluster allows a script to touch
undeclared keys as long as they hash to the declared keys' slot.

The request path's scripts (reserve, settle) declare one key, the bucket's leases, and build
the others from its tag, and take the counter margin written into their source: on Redis the
client's CPU per call is the store's cost, and each argument is one more to pack and parse (24
+ 18 arguments per call before, 11 + 10 now, with two holds: settle's ledger row carries the
time and token id it is indexed by).

Numbers: Redis Lua numbers are doubles; counter arithmetic uses INCRBY (64-bit integers) and
formats with ``%d``, and the Python side refuses amounts beyond 2**53 before they get here.
"""

from __future__ import annotations

from capwallet.store.base import COUNTER_MARGIN as COUNTER_MARGIN  # a counter outlives its period

# Shared helper: add ``delta`` to counter ``key`` (never below 0) and give it an expiry of the
# period end (or the server's now, if later) plus the margin, unless resets < 0 ("total").
_ADD = """
local function add(key, delta, resets, margin)
  local v = redis.call('INCRBY', key, string.format('%d', delta))
  if v < 0 then redis.call('SET', key, '0', 'KEEPTTL') end
  if resets >= 0 and redis.call('TTL', key) == -1 then
    local now = tonumber(redis.call('TIME')[1])
    if resets < now then resets = now end
    redis.call('EXPIREAT', key, string.format('%d', resets + margin))
  end
end
"""

# Append one ledger row (JSON text) to the bucket's ledger and the token's index, and add a
# model call that was not refused to the usage aggregates: four hashes (cost, calls, input and
# output tokens) keyed by the JSON array [UTC day, token, app, provider, model, currency].
# Row fields: 1 time, 2 latency, 3 token, 4 app, 5 provider, 6 model, 7 operation, 8 input,
# 9 output, 10 cost, 11 currency, 12 status. ``token`` and ``time`` nil: the row's own (a
# settle sends them only in its row). Returns the row's member.
_APPEND = """
local function append(tag, seq_key, rows_key, log_key, token, time, row)
  local r = cjson.decode(row)
  if not token then token = r[3] end
  if not time then time = string.format('%d', r[1]) end
  local seq = redis.call('INCR', seq_key)
  local member = string.format('%016d', seq)
  redis.call('HSET', rows_key, member, row)
  redis.call('ZADD', log_key, time, member)
  redis.call('ZADD', tag .. 'log:' .. token, time, member)
  if r[5] ~= '' and string.sub(r[12], 1, 6) ~= 'denied' then
    local field = cjson.encode({math.floor(r[1] / 86400), r[3], r[4], r[5], r[6], r[11]})
    redis.call('HINCRBY', tag .. 'agg:cost', field, string.format('%d', r[10]))
    redis.call('HINCRBY', tag .. 'agg:calls', field, 1)
    redis.call('HINCRBY', tag .. 'agg:in', field, string.format('%d', r[8]))
    redis.call('HINCRBY', tag .. 'agg:out', field, string.format('%d', r[9]))
  end
  return member
end
"""

# The bucket's key tag, from the one key a request-path script declares (its tag + 'leases').
_TAG = """
local tag = string.sub(KEYS[1], 1, -7)
"""

# KEYS: 1 the bucket's leases (its tag + 'leases')
# ARGV: 1 rid, 2 lease_until, 3 approval id or '', 4 holds JSON [[counter key, amount, limit,
#       resets], ...], 5 token id, 6 created_at, 7 lease-expired ledger row tail
# Returns {1} ok, {-1} duplicate id, {-2} the token is revoked,
# {0, hold index (1-based) or 0, used, approval_used 0/1}.
# The duplicate id first: a retried reserve whose first attempt landed must say so, even if
# the token was revoked in between (that call then reserved before the revocation).
RESERVE = _ADD + _TAG + f"""
local rkey = tag .. 'r:' .. ARGV[1]
if redis.call('EXISTS', rkey) == 1 then return {{-1}} end
if redis.call('HEXISTS', tag .. 'revoked', ARGV[5]) == 1 then return {{-2}} end
local approval = ARGV[3]
if approval ~= '' and redis.call('SISMEMBER', tag .. 'approvals', approval) == 1 then
  return {{0, 0, 0, 1}}
end
local holds = cjson.decode(ARGV[4])
for i, h in ipairs(holds) do
  if h[2] > 0 then
    local used = tonumber(redis.call('GET', tag .. 'c:' .. h[1]) or '0')
    if used + h[2] > h[3] then return {{0, i, used, 0}} end
  end
end
for _, h in ipairs(holds) do
  if h[2] > 0 then add(tag .. 'c:' .. h[1], h[2], h[4], {COUNTER_MARGIN}) end
end
redis.call('HSET', rkey, 'holds', ARGV[4], 'token', ARGV[5], 'created', ARGV[6],
           'expired_row', ARGV[7])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
if approval ~= '' then redis.call('SADD', tag .. 'approvals', approval) end
return {{1}}
"""

# KEYS: 1 the bucket's leases (its tag + 'leases')
# ARGV: 1 rid, 2 ledger row JSON (its time and token id index it), 3.. (counter key, amount)
# Returns 1 if settled now, 0 if the reservation is unknown or already closed.
SETTLE = _ADD + _APPEND + _TAG + f"""
local rkey = tag .. 'r:' .. ARGV[1]
local holds_json = redis.call('HGET', rkey, 'holds')
if not holds_json then return 0 end
local charge = {{}}
for i = 3, #ARGV, 2 do charge[ARGV[i]] = tonumber(ARGV[i + 1]) end
for _, h in ipairs(cjson.decode(holds_json)) do
  local delta = (charge[h[1]] or 0) - h[2]
  if delta ~= 0 then add(tag .. 'c:' .. h[1], delta, h[4], {COUNTER_MARGIN}) end
end
redis.call('DEL', rkey)
redis.call('ZREM', KEYS[1], ARGV[1])
append(tag, tag .. 'seq', tag .. 'rows', tag .. 'log', nil, nil, ARGV[2])
return 1
"""

# KEYS: 1 leases, 2 ledger seq, 3 ledger rows, 4 bucket ledger
# ARGV: 1 now, 2 tag, 3 batch size
# Closes up to a batch of reservations whose lease_until < now at their reserved amounts (the
# counters already hold them) and logs each as lease_expired. Returns {closed, looked at}.
EXPIRE = _APPEND + """
local now = tonumber(ARGV[1])
local tag = ARGV[2]
local rids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[3])
local closed = 0
for _, rid in ipairs(rids) do
  local rkey = tag .. 'r:' .. rid
  local r = redis.call('HMGET', rkey, 'token', 'created', 'expired_row')
  redis.call('ZREM', KEYS[1], rid)
  if r[1] then
    redis.call('DEL', rkey)
    local latency = now - tonumber(r[2])
    if latency < 0 then latency = 0 end
    local row = '[' .. ARGV[1] .. ',' .. string.format('%d', latency * 1000) .. ',' .. r[3]
    append(tag, KEYS[2], KEYS[3], KEYS[4], r[1], ARGV[1], row)
    closed = closed + 1
  end
end
return {closed, #rids}
"""

# KEYS: 1 ledger seq, 2 ledger rows, 3 bucket ledger
# ARGV: 1 tag, 2 token id, 3 time, 4 row JSON, 5 compaction key suffix ('' for a row that is
#       not a refusal: '<token>:<minute>:<status>')
# A ledger row that belongs to no reservation (a refused call). A refusal with the same token,
# minute and status as an earlier one adds to that row's count ({tag}count, member -> count)
# instead. Returns 1 for a new row, 2 for a counted one.
APPEND_LEDGER = _APPEND + """
local tag = ARGV[1]
local dkey = tag .. 'd:' .. ARGV[5]
if ARGV[5] ~= '' then
  local member = redis.call('GET', dkey)
  if member and redis.call('HEXISTS', KEYS[2], member) == 1 then
    redis.call('HINCRBY', tag .. 'count', member, 1)
    return 2
  end
end
local member = append(tag, KEYS[1], KEYS[2], KEYS[3], ARGV[2], ARGV[3], ARGV[4])
if ARGV[5] ~= '' then
  redis.call('SET', dkey, member, 'EX', 180)
  redis.call('HSET', tag .. 'count', member, 1)
end
return 1
"""

# KEYS: 1 bucket ledger, 2 ledger rows; ARGV: 1 tag, 2 before (time), 3 batch size
# Deletes up to a batch of the bucket's ledger rows with time < before (and their entries in
# the token indexes and the count hash). Returns how many.
PRUNE = """
local tag = ARGV[1]
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'LIMIT', 0,
                           ARGV[3])
for _, m in ipairs(members) do
  local row = redis.call('HGET', KEYS[2], m)
  if row then
    redis.call('ZREM', tag .. 'log:' .. cjson.decode(row)[3], m)
  end
  redis.call('HDEL', KEYS[2], m)
  redis.call('HDEL', tag .. 'count', m)
  redis.call('ZREM', KEYS[1], m)
end
return #members
"""

# KEYS: 1 agg:cost, 2 agg:calls, 3 agg:in, 4 agg:out (one bucket). Returns their HGETALLs.
USAGE = """
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]),
        redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4])}
"""

# KEYS: 1 revoked (the token's bucket), 2.. the token's counters; ARGV: 1 token id
# Returns {1 if revoked else 0, used of each counter (nil if absent)}: what a request needs,
# in one round trip.
SNAPSHOT = """
local out = {redis.call('HEXISTS', KEYS[1], ARGV[1])}
for i = 2, #KEYS do out[i] = redis.call('GET', KEYS[i]) end
return out
"""

# KEYS: 1 a ledger index (bucket or token), 2 ledger rows, 3 refusal counts
# ARGV: 1 min time ('-inf' or an integer), 2 limit
# Returns {member, row, count, member, row, count, ...}, newest first (count '1' if none).
LEDGER = """
local members = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #members == 0 then return {} end
local rows = redis.call('HMGET', KEYS[2], unpack(members))
local counts = redis.call('HMGET', KEYS[3], unpack(members))
local out = {}
for i, m in ipairs(members) do
  if rows[i] then
    out[#out + 1] = m
    out[#out + 1] = rows[i]
    out[#out + 1] = counts[i] or '1'
  end
end
return out
"""

_PENDING_FIELDS = ("'token', 'digest', 'summary', 'created', 'expires', 'status', 'approval', "
                   "'kind'")

# KEYS: 1 pending record, 2 open index
# ARGV: 1 id, 2 token, 3 digest, 4 summary, 5 created, 6 expires, 7 status, 8 approval or '',
#       9 keep seconds after expiry, 10 kind
ADD_PENDING = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'token', ARGV[2], 'digest', ARGV[3], 'summary', ARGV[4],
           'created', ARGV[5], 'expires', ARGV[6], 'status', ARGV[7], 'approval', ARGV[8],
           'kind', ARGV[10])
local now = tonumber(redis.call('TIME')[1])
local until_ = tonumber(ARGV[6])
if until_ < now then until_ = now end
redis.call('EXPIREAT', KEYS[1], string.format('%d', until_ + tonumber(ARGV[9])))
if ARGV[7] == 'pending' then redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1]) end
return 1
"""

# KEYS: 1 pending record, 2 open index; ARGV: 1 id, 2 new status, 3 approval or ''
RESOLVE_PENDING = """
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'approval', ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: 1 open index; ARGV: 1 now, 2 tag
# Returns the open requests still waiting at ``now`` (oldest first) as flat field lists, and
# drops index entries whose record has expired away.
LIST_PENDING = f"""
local out = {{}}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local r = redis.call('HMGET', ARGV[2] .. 'p:' .. id, {_PENDING_FIELDS})
  if not r[1] then
    redis.call('ZREM', KEYS[1], id)
  elseif r[6] == 'pending' and tonumber(r[5]) > tonumber(ARGV[1]) then
    out[#out + 1] = id
    for j = 1, 7 do out[#out + 1] = r[j] end
    out[#out + 1] = r[8] or false
  end
end
return out
"""

# KEYS: 1 the token's chains (hash chain id -> JSON [first_seen, caveats]), 2 the bucket's
#       chain expiries (PRUNE_CHAINS)
# ARGV: 1 chain id, 2 JSON record, 3 most chains a token may have, 4 the chain's expiry ('':
#       none), 5 token id
# First write wins, and a token's chains stop at the limit. Returns 1 if recorded, else 0.
NOTE_CHAIN = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5] .. ' ' .. ARGV[1]) end
return 1
"""

# KEYS: 1 the bucket's chain expiries (score: expiry, member: '<token id> <chain id>')
# ARGV: 1 expired before, 2 tag, 3 batch size
# Deletes up to a batch of the bucket's chains that expired before ARGV[1] (each from its
# token's chains hash, in this bucket). Returns {deleted, looked at}.
PRUNE_CHAINS = """
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[3])
local deleted = 0
for _, member in ipairs(found) do
  local sp = string.find(member, ' ', 1, true)
  deleted = deleted + redis.call('HDEL', ARGV[2] .. 'chains:' .. string.sub(member, 1, sp - 1),
                                 string.sub(member, sp + 1))
  redis.call('ZREM', KEYS[1], member)
end
return {deleted, #found}
"""

# KEYS: 1 the token's chains. A script, not HGETALL, so that the store's script runner reads
# many tokens' chains in one pipelined round trip (and 8 at a time on a cluster).
CHAINS = """
return redis.call('HGETALL', KEYS[1])
"""
