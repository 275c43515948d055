-- redis.lua - the Redis backend's Lua library (see docs/REDIS.md for the key layout and the
-- calls). Every state change of a job or queue is one call of this script, so each is atomic.
-- Called as EVALSHA SHA 1 CHANNEL OP ARGS...: ARGV[1] names the operation; KEYS[1] is the
-- events channel, published to once at the end of a call with the job events it made.
-- common/backend_redis.c loads it (embedded at build time) and builds the arguments.
local P = 'spool:'
local EV = KEYS[1]
local EVT = {} -- this call's job events, published as one message at its end
-- A job view: these fields, then the id (element 17).
local V = {'q', 'd', 'o', 's', 'a', 'c', 'r', 'st', 'f', 'le', 'res', 'err', 'w', 'k', 'cr', 'l'}
local T = redis.call('TIME')
local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)
local NOWS = string.format('%d', NOW)
local SH = 1099511627776
local TOT = {[2] = 'lea', [3] = 'suc', [4] = 'fai', [5] = 'can'}
local NOTRUN = {[0] = 'job is scheduled, not running', 'job is queued, not running',
                'job is running', 'job is already succeeded', 'job is already failed',
                'job is already canceled'}
local NOTRETRY = {[0] = 'job is scheduled, not failed or canceled',
                  'job is queued, not failed or canceled', 'job is running, not failed or canceled',
                  'job is succeeded, not failed or canceled', 'job is failed', 'job is canceled'}
local ZS = {[0] = 'delayed', 'ready', 'active', 'done', 'done', 'done'}
local function qk(q, s) return P .. '{' .. q .. '}:' .. s end
local function jk(id) return P .. 'job:' .. id end
local function view(id)
  local v = redis.call('HMGET', jk(id), unpack(V))
  v[17] = id
  return v
end
local function num(v, d) return tonumber(v) or d end
-- The options field 'o': "PRIORITY MAX_ATTEMPTS TIMEOUT_MS BACKOFF_MS".
local function opts(o)
  local p, ma, to, bo = string.match(o or '', '^(%d+) (%d+) (%d+) (%d+)')
  return num(p, 5), num(ma, 3), num(to, 30000), num(bo, 1000)
end
local function ready_score(pr, seq) return (9 - pr) * SH + seq end
-- When a job given 'D' (a delay in ms) or '@T' (a time) is due; nil when it is due now.
local function due_at(d)
  local at
  if string.byte(d, 1) == 64 then at = tonumber(string.sub(d, 2)) else at = NOW + tonumber(d) end
  if at > NOW then return at end
  return nil
end
local function qreg(q)
  if not redis.call('ZSCORE', P .. 'queues', q) then
    redis.call('ZADD', P .. 'queues', redis.call('INCR', P .. 'qseq'), q)
  end
end
local function event(id, from, to, a, r, st, f, q)
  EVT[#EVT + 1] = id .. ' ' .. from .. ' ' .. to .. ' ' .. (a or 0) .. ' ' .. (r or -1) .. ' ' ..
                  (st or -1) .. ' ' .. f .. ' ' .. q
end
-- Moves a job between states: out of the old state's sorted set, into the new one's, counts
-- and totals adjusted, one line for the events message. j holds fields the caller knows
-- (pr, r, le, a, st); without it they are read.
local function move(id, q, from, to, j)
  local key = jk(id)
  if not j then
    local v = redis.call('HMGET', key, 'o', 'r', 'le', 'a', 'st', 'c')
    j = {pr = opts(v[1]), r = v[2] or v[6], le = v[3], a = v[4], st = v[5]}
  end
  if from >= 0 then redis.call('ZREM', qk(q, ZS[from]), id) end
  local f = -1
  if to == 0 then
    redis.call('ZADD', qk(q, 'delayed'), j.r, id)
    redis.call('HSET', key, 's', to)
  elseif to == 1 then
    local seq = redis.call('HINCRBY', qk(q, 'stats'), 'seq', 1)
    redis.call('ZADD', qk(q, 'ready'), ready_score(j.pr, seq), id)
    redis.call('HSET', key, 's', to)
  elseif to == 2 then
    redis.call('ZADD', qk(q, 'active'), j.le, id)
    redis.call('HSET', key, 's', to)
  else
    f = NOWS
    redis.call('HSET', key, 's', to, 'f', NOWS)
    redis.call('ZADD', qk(q, 'done'), NOWS, id)
  end
  local sk = qk(q, 'stats')
  if from >= 0 then redis.call('HINCRBY', sk, 'c' .. from, -1) end
  redis.call('HINCRBY', sk, 'c' .. to, 1)
  if TOT[to] then redis.call('HINCRBY', sk, TOT[to], 1) end
  event(id, from, to, j.a, j.r, j.st, f, q)
end
-- ZADD (or ZREM) of many arguments, a thousand pairs at a time (Lua's stack is bounded).
local function many(cmd, key, args, step)
  for i = 1, #args, step do
    redis.call(cmd, key, unpack(args, i, math.min(i + step - 1, #args)))
  end
end
local function forget(id, q, s)
  local key = jk(id)
  local k = redis.call('HGET', key, 'k')
  if k then
    local ik = qk(q, 'idem:') .. k
    if redis.call('GET', ik) == tostring(id) then redis.call('DEL', ik) end
  end
  redis.call('ZREM', qk(q, ZS[s]), id)
  redis.call('ZREM', qk(q, 'all'), id)
  redis.call('HINCRBY', qk(q, 'stats'), 'c' .. s, -1)
  redis.call('DEL', key)
end
local function requeue(id, q, delay)
  redis.call('HINCRBY', qk(q, 'stats'), 'ret', 1)
  redis.call('HSET', jk(id), 'r', NOW + delay)
  if delay > 0 then move(id, q, 2, 0) else move(id, q, 2, 1) end
end
local function promote(q, limit)
  local due = redis.call('ZRANGEBYSCORE', qk(q, 'delayed'), '-inf', NOW, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do move(id, q, 0, 1) end
  return #due
end
-- A running job's fields for a call fenced by its lease: s, l, le, q, cr, a, ma, bo, to; or
-- nil and the answer.
local function leased(id, lease)
  local v = redis.call('HMGET', jk(id), 's', 'l', 'le', 'q', 'cr', 'a', 'o')
  if not v[1] then return nil, {-3} end
  local s = tonumber(v[1])
  if s ~= 2 then return nil, {-4, NOTRUN[s]} end
  if v[2] ~= lease then return nil, {-4, "lease is not the job's current lease"} end
  if NOW > tonumber(v[3]) then return nil, {-4, 'lease expired'} end
  local _, ma, to, bo = opts(v[7])
  v[7], v[8], v[9] = ma, bo, to
  return v
end
local function stats(q)
  local v = redis.call('HMGET', qk(q, 'stats'), 'c0', 'c1', 'c2', 'c3', 'c4', 'c5', 'enq', 'suc',
                       'fai', 'ret', 'lea', 'can', 'paused')
  local out = {q, num(v[13], 0)}
  for i = 1, 6 do out[#out + 1] = num(v[i], 0) end
  local oldest = nil
  if num(v[2], 0) > 0 then
    local rk = qk(q, 'ready')
    for b = 0, 9 do
      local h = redis.call('ZRANGEBYSCORE', rk, b * SH, '(' .. ((b + 1) * SH), 'LIMIT', 0, 1)
      if h[1] then
        local rc = redis.call('HMGET', jk(h[1]), 'r', 'c')
        local r = num(rc[1] or rc[2], NOW)
        if not oldest or r < oldest then oldest = r end
      end
    end
  end
  out[#out + 1] = (oldest and NOW > oldest) and (NOW - oldest) or 0
  for i = 7, 12 do out[#out + 1] = num(v[i], 0) end
  return out
end
-- Acks one job; its sorted-set moves and counters are left to ack_flush. With full, a success
-- answers the job's view.
local function ack_one(id, lease, hasres, res, full, bulk)
  local key = jk(id)
  local v = redis.call('HMGET', key, 's', 'l', 'le', 'q', 'a', 'r', 'st', 'c')
  if not v[1] then return {-3} end
  local s = tonumber(v[1])
  if s == 3 and v[2] == lease then
    if full then return {0, view(id)} end
    return {0}
  end
  if s ~= 2 then return {-4, NOTRUN[s]} end
  if v[2] ~= lease then return {-4, "lease is not the job's current lease"} end
  if NOW > tonumber(v[3]) then return {-4, 'lease expired'} end
  if hasres then
    redis.call('HSET', key, 's', '3', 'f', NOWS, 'res', res)
  else
    redis.call('HSET', key, 's', '3', 'f', NOWS)
  end
  local q = v[4]
  local g = bulk.map[q]
  if not g then
    g = {ids = {}, ev = {}}
    bulk.map[q] = g
    bulk.order[#bulk.order + 1] = q
  end
  g.ids[#g.ids + 1] = id
  local ev = g.ev
  ev[#ev + 1] = id
  ev[#ev + 1] = v[5] or '0'
  ev[#ev + 1] = v[6] or v[8]
  ev[#ev + 1] = v[7] or '-1'
  if full then return {0, view(id)} end
  return {0}
end
local function ack_flush(bulk)
  for _, q in ipairs(bulk.order) do
    local ids = bulk.map[q].ids
    EVT[#EVT + 1] = 'A ' .. NOWS .. ' ' .. #ids .. ' ' .. table.concat(bulk.map[q].ev, ' ') .. ' ' .. q
    local zd = {}
    for i = 1, #ids do
      zd[2 * i - 1] = NOWS
      zd[2 * i] = ids[i]
    end
    many('ZREM', qk(q, 'active'), ids, 1000)
    many('ZADD', qk(q, 'done'), zd, 2000)
    local sk = qk(q, 'stats')
    redis.call('HINCRBY', sk, 'c2', -#ids)
    redis.call('HINCRBY', sk, 'c3', #ids)
    redis.call('HINCRBY', sk, 'suc', #ids)
  end
end
local op = ARGV[1]
local function dispatch()
if op == 'submit' then
  -- ARGV: op, idem_ttl_ms, max_depth, queue, n, then per job 4 fields:
  -- d (type and payload), o (options), delay_ms or @run_at, key ('' for none).
  -- Answers 0, NOW, then per job two elements: a new job's id and run_at; 0 and the view of
  -- the job an idempotency key already names; or -i and 0 for a repeat of entry i's key.
  local ttl, maxd, q, n = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
  qreg(q)
  local ik = qk(q, 'idem:')
  local kind, ref, at, first = {}, {}, {}, {}
  local nnew, nready = 0, 0
  for i = 1, n do
    local b = 2 + 4 * i
    local key = ARGV[b + 3]
    kind[i] = 1
    if key ~= '' then
      if first[key] then
        kind[i], ref[i] = 2, first[key]
      else
        local jid = redis.call('GET', ik .. key)
        if jid and redis.call('EXISTS', jk(jid)) == 1 then
          kind[i], ref[i] = 3, jid
        else
          first[key] = i
        end
      end
    end
    if kind[i] == 1 then
      nnew = nnew + 1
      at[i] = due_at(ARGV[b + 2])
      if not at[i] then nready = nready + 1 end
    end
  end
  if maxd > 0 and nnew > 0 then
    local v = redis.call('HMGET', qk(q, 'stats'), 'c0', 'c1', 'c2')
    local depth = num(v[1], 0) + num(v[2], 0) + num(v[3], 0)
    if nnew > maxd or depth > maxd - nnew then return {-5} end
  end
  local out = {0, NOW}
  local ids = {}
  if nnew > 0 then
    local nid = redis.call('INCRBY', P .. 'ids', nnew) - nnew
    -- The first jobs of a database (also one emptied under running servers) mark its layout.
    if nid == 0 then redis.call('SET', P .. 'layout', '2') end
    local first_id = nid + 1
    local sk = qk(q, 'stats')
    local seq = 0
    if nready > 0 then seq = redis.call('HINCRBY', sk, 'seq', nready) - nready end
    local all, ready, delayed = {}, {}, {}
    -- Only when every new job is queued does one event line stand for them all.
    local lines = nready < nnew
    for i = 1, n do
      if kind[i] == 1 then
        local b = 2 + 4 * i
        nid = nid + 1
        local sid = string.format('%d', nid)
        ids[i] = nid
        local key = P .. 'job:' .. sid
        local o = ARGV[b + 1]
        local t = at[i]
        if t then
          redis.call('HSET', key, 'q', q, 'd', ARGV[b], 'o', o, 's', '0', 'c', NOWS, 'r', t)
          delayed[#delayed + 1] = t
          delayed[#delayed + 1] = sid
          event(sid, -1, 0, 0, t, -1, -1, q)
        else
          redis.call('HSET', key, 'q', q, 'd', ARGV[b], 'o', o, 's', '1', 'c', NOWS)
          seq = seq + 1
          ready[#ready + 1] = ready_score(string.byte(o) - 48, seq)
          ready[#ready + 1] = sid
          if lines then event(sid, -1, 1, 0, NOWS, -1, -1, q) end
        end
        local k = ARGV[b + 3]
        if k ~= '' then
          redis.call('HSET', key, 'k', k)
          redis.call('SET', ik .. k, sid, 'PX', ttl)
        end
        all[#all + 1] = sid
        all[#all + 1] = sid
      end
    end
    if not lines then EVT[#EVT + 1] = 'R ' .. first_id .. ' ' .. nnew .. ' ' .. NOWS .. ' ' .. q end
    many('ZADD', qk(q, 'all'), all, 2000)
    many('ZADD', qk(q, 'ready'), ready, 2000)
    many('ZADD', qk(q, 'delayed'), delayed, 2000)
    redis.call('HINCRBY', sk, 'enq', nnew)
    if nready > 0 then redis.call('HINCRBY', sk, 'c1', nready) end
    if nnew > nready then redis.call('HINCRBY', sk, 'c0', nnew - nready) end
  end
  for i = 1, n do
    if kind[i] == 1 then
      out[#out + 1] = ids[i]
      out[#out + 1] = at[i] or NOW
    elseif kind[i] == 2 then
      out[#out + 1] = -ref[i]
      out[#out + 1] = 0
    else
      out[#out + 1] = 0
      out[#out + 1] = view(ref[i])
    end
  end
  return out
elseif op == 'get' then
  local v = view(ARGV[2])
  if not v[1] then return {-3} end
  return {0, v}
elseif op == 'cancel' then
  local id = ARGV[2]
  local v = redis.call('HMGET', jk(id), 's', 'q')
  if not v[1] then return {-3} end
  local s = tonumber(v[1])
  if s == 0 or s == 1 then
    move(id, v[2], s, 5)
  elseif s == 2 then
    redis.call('HSET', jk(id), 'cr', 1)
  else
    return {-4, NOTRUN[s]}
  end
  return {0, view(id)}
elseif op == 'retry' then
  local id = ARGV[2]
  local v = redis.call('HMGET', jk(id), 's', 'q')
  if not v[1] then return {-3} end
  local s = tonumber(v[1])
  if s ~= 4 and s ~= 5 then return {-4, NOTRETRY[s]} end
  redis.call('HSET', jk(id), 'a', 0, 'r', NOWS, 'cr', 0)
  redis.call('HDEL', jk(id), 'f')
  move(id, v[2], s, 1)
  return {0, view(id)}
elseif op == 'lease' then
  -- ARGV: op, max, has_worker, worker, salt (9 random digits), nqueues, queues...
  local max, hasw, worker, nq = tonumber(ARGV[2]), ARGV[3] == '1', ARGV[4], tonumber(ARGV[6])
  local salt = ARGV[5]
  local queues = {}
  if nq == 0 then
    queues = redis.call('ZRANGE', P .. 'queues', 0, -1)
  else
    for i = 1, nq do queues[i] = ARGV[6 + i] end
  end
  local out = {0}
  local n = 0
  local tmo = {} -- timeouts by options field: jobs mostly share one
  for _, q in ipairs(queues) do
    if n >= max then break end
    if redis.call('HGET', qk(q, 'stats'), 'paused') ~= '1' then
      promote(q, 1000)
      local got = redis.call('ZPOPMIN', qk(q, 'ready'), max - n)
      local k = #got / 2
      if k > 0 then
        local tok = redis.call('INCRBY', P .. 'lease', k) - k
        local act = {}
        local ev = {'L', NOWS, k}
        for i = 1, #got, 2 do
          local id = got[i]
          local key = jk(id)
          local v = redis.call('HMGET', key, 'd', 'o', 'a', 'c', 'r', 'k', 'w')
          tok = tok + 1
          local token = salt .. string.format('%010d', tok % 10000000000)
          local to = tmo[v[2]]
          if not to then
            local _, _, t = opts(v[2])
            to = t
            tmo[v[2]] = t
          end
          local le = string.format('%d', NOW + to)
          local a = tostring(num(v[3], 0) + 1)
          if hasw then
            redis.call('HSET', key, 'l', token, 'st', NOWS, 'le', le, 'a', a, 's', '2', 'w', worker)
          else
            redis.call('HSET', key, 'l', token, 'st', NOWS, 'le', le, 'a', a, 's', '2')
            if v[7] then redis.call('HDEL', key, 'w') end
          end
          act[#act + 1] = le
          act[#act + 1] = id
          local r = v[5] or v[4]
          ev[#ev + 1] = id
          ev[#ev + 1] = a
          ev[#ev + 1] = r
          n = n + 1
          out[#out + 1] = {q, v[1], v[2], 2, a, v[4], r, NOWS, false, le, false, false,
                           hasw and worker or false, v[6] or false, false, token, id}
        end
        ev[#ev + 1] = q
        EVT[#EVT + 1] = table.concat(ev, ' ')
        many('ZADD', qk(q, 'active'), act, 2000)
        local sk = qk(q, 'stats')
        redis.call('HINCRBY', sk, 'c1', -k)
        redis.call('HINCRBY', sk, 'c2', k)
        redis.call('HINCRBY', sk, 'lea', k)
      end
    end
  end
  return out
elseif op == 'acks' then
  -- ARGV: op, n, then per ack: id, lease, has_result, result, full; one answer per ack
  local out = {0}
  local bulk = {map = {}, order = {}}
  for i = 0, tonumber(ARGV[2]) - 1 do
    local b = 3 + i * 5
    out[#out + 1] = ack_one(ARGV[b], ARGV[b + 1], ARGV[b + 2] == '1', ARGV[b + 3],
                            ARGV[b + 4] == '1', bulk)
  end
  ack_flush(bulk)
  return out
elseif op == 'fail' then
  -- ARGV: op, id, lease, has_error, error, retry, retry_in_ms, random
  local id, lease = ARGV[2], ARGV[3]
  local j, err = leased(id, lease)
  if not j then return err end
  redis.call('HSET', jk(id), 'err', ARGV[4] == '1' and ARGV[5] or 'failed')
  local q, a, ma = j[4], tonumber(j[6]), j[7]
  if j[5] == '1' then
    move(id, q, 2, 5)
  elseif ARGV[6] == '1' and a < ma then
    local delay = tonumber(ARGV[7])
    if delay < 0 then
      local base = j[8]
      if base == 0 then
        delay = 0
      else
        local shift = a > 0 and a - 1 or 0
        if shift >= 22 then base = 3600000 else base = math.min(base * 2 ^ shift, 3600000) end
        delay = base + tonumber(ARGV[8]) % (math.floor(base / 10) + 1)
      end
    end
    requeue(id, q, delay)
  else
    move(id, q, 2, 4)
  end
  return {0, view(id)}
elseif op == 'heartbeat' then
  -- ARGV: op, id, lease, extend_ms (< 0: the job's timeout)
  local id, lease = ARGV[2], ARGV[3]
  local j, err = leased(id, lease)
  if not j then return err end
  local ext = tonumber(ARGV[4])
  if ext < 0 then ext = j[9] end
  redis.call('HSET', jk(id), 'le', NOW + ext)
  redis.call('ZADD', qk(j[4], 'active'), NOW + ext, id)
  return {0, view(id)}
elseif op == 'release' then
  local id, lease = ARGV[2], ARGV[3]
  local j, err = leased(id, lease)
  if not j then return err end
  if tonumber(j[6]) > 0 then redis.call('HINCRBY', jk(id), 'a', -1) end
  if j[5] == '1' then
    move(id, j[4], 2, 5)
  else
    redis.call('HSET', jk(id), 'r', NOWS)
    move(id, j[4], 2, 1)
  end
  return {0, view(id)}
elseif op == 'queues' then
  -- ARGV: op, name ('' = every queue)
  local out = {0}
  if ARGV[2] ~= '' then
    if not redis.call('ZSCORE', P .. 'queues', ARGV[2]) then return {-3} end
    out[2] = stats(ARGV[2])
  else
    for _, q in ipairs(redis.call('ZRANGE', P .. 'queues', 0, -1)) do out[#out + 1] = stats(q) end
  end
  return out
elseif op == 'pause' then
  -- ARGV: op, queue, pause (1/0)
  local q = ARGV[2]
  qreg(q)
  local sk = qk(q, 'stats')
  local was = redis.call('HGET', sk, 'paused') == '1'
  redis.call('HSET', sk, 'paused', ARGV[3])
  if was and ARGV[3] == '0' and num(redis.call('HGET', sk, 'c1'), 0) > 0 then
    EVT[#EVT + 1] = '0 -1 1 0 -1 -1 -1 ' .. q
  end
  return {0, stats(q)}
elseif op == 'list' then
  -- ARGV: op, queue, state (-1 = every state), after, limit
  local q, state, after, limit = ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
  if not redis.call('ZSCORE', P .. 'queues', q) then return {-3} end
  local out = {0, 0}
  local k = 0
  local cursor = '(' .. after
  while true do
    local ids = redis.call('ZRANGEBYSCORE', qk(q, 'all'), cursor, '+inf', 'LIMIT', 0, 200)
    if #ids == 0 then return out end
    for _, id in ipairs(ids) do
      if state < 0 or tonumber(redis.call('HGET', jk(id), 's')) == state then
        if k == limit then
          out[2] = out[#out][17]
          return out
        end
        k = k + 1
        out[#out + 1] = view(id)
      end
    end
    cursor = '(' .. ids[#ids]
  end
elseif op == 'purge' then
  -- ARGV: op, queue, state
  local q, state = ARGV[2], tonumber(ARGV[3])
  if not redis.call('ZSCORE', P .. 'queues', q) then return {-3} end
  local ids = redis.call('ZRANGE', qk(q, ZS[state]), 0, -1)
  local n = 0
  for _, id in ipairs(ids) do
    if state < 3 or tonumber(redis.call('HGET', jk(id), 's')) == state then
      forget(id, q, state)
      n = n + 1
    end
  end
  return {0, n}
elseif op == 'reap' then
  -- ARGV: op, retention_ms. Promotes due delayed jobs, expires leases, forgets old jobs;
  -- atomic, so every server may run it at once.
  local ret = tonumber(ARGV[2])
  local acted = 0
  for _, q in ipairs(redis.call('ZRANGE', P .. 'queues', 0, -1)) do
    acted = acted + promote(q, 1000)
    local exp = redis.call('ZRANGEBYSCORE', qk(q, 'active'), '-inf', '(' .. NOW, 'LIMIT', 0, 1000)
    for _, id in ipairs(exp) do
      local key = jk(id)
      local v = redis.call('HMGET', key, 'le', 'st', 'cr', 'a', 'o')
      local _, ma = opts(v[5])
      redis.call('HSET', key, 'err', 'lease expired after ' ..
                 string.format('%d', tonumber(v[1]) - tonumber(v[2])) .. ' ms without ack or heartbeat')
      if v[3] == '1' then
        move(id, q, 2, 5)
      elseif tonumber(v[4]) < ma then
        requeue(id, q, 0)
      else
        move(id, q, 2, 4)
      end
    end
    acted = acted + #exp
    local old = {}
    if ret >= 0 then
      old = redis.call('ZRANGEBYSCORE', qk(q, 'done'), '-inf', NOW - ret, 'LIMIT', 0, 1000)
    end
    for _, id in ipairs(old) do
      local s = tonumber(redis.call('HGET', jk(id), 's'))
      if s then forget(id, q, s) else redis.call('ZREM', qk(q, 'done'), id) end
    end
  end
  return {0, acted}
end
return {-2, 'unknown operation'}
end
local res = dispatch()
if #EVT > 0 then redis.call('PUBLISH', EV, table.concat(EVT, '\n')) end
return res
