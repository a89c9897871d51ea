import NovaQueue
import NovaRedis

/// The Lua scripts of `RedisJobQueue`: every state change is one script, so it is atomic.
///
/// Keys of queue Q share the hash tag `{Q}` (Redis Cluster puts them in one slot), under
/// `KEYS[1]` = `nova:{Q}:`:
/// - `job:<id>` hash: the job's fields (`token` is the fencing token);
/// - `available` sorted set, score −priority (ties in id order, which is enqueue order);
/// - `delayed` sorted set, score run-at in ms (delayed jobs and failed jobs waiting to retry);
/// - `running` sorted set, score lease expiry in ms;
/// - `state:<state>` sorted sets (score 0, so members sort by id, which is creation order) for
///   listing and counting, for the states a job rests in: `available` and `running`, which every
///   job passes through, have their own sets (`listAvailable` lists the first by id);
/// - `idem` hash: idempotency key → job id;
/// - `settings` hash: the queue's flow control (`paused`, `max_running`, `rate`, `weight`) and
///   the state claims keep for it (`tokens`, `refilled_at`, `served`);
/// - `audit` stream: a record per state change, written by the script that makes the change (so
///   none is lost or made up), until `nova serve` moves it into the signed audit log. A script's
///   records go in one entry (`v` 2, `ac` actor, an `r` per record), read by
///   `RedisJobQueue.transitions(from:queue:source:cursor:)`.
///
/// Every script takes the acting name (the audit actor) as its last argument; an empty one
/// writes no audit records (benchmarks without auditing).
///
/// Each job's life is about 12 Redis calls inside three scripts (with one audit entry per
/// script call, from what the script has read of the job already), the fewest that keep every
/// state listable and countable. Times, scores and counters travel as strings: a Lua number given
/// to `redis.call` is formatted with printf, which cost more than the commands themselves.
enum RedisQueueScripts {
  /// Moves a job's membership from one `state:` set to another and sets its state field.
  private static let helpers = """
    local p = KEYS[1]
    local actor = ARGV[#ARGV]
    -- Milliseconds on Redis's own clock ('' given) or the caller's: with Redis's, hosts whose
    -- clocks differ still agree on leases, delays and reaping.
    local function clock(given)
      if given ~= '' then return given end
      local t = redis.call('TIME')
      return t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
    end
    local function plus(ms, delta) return string.format('%d', tonumber(ms) + tonumber(delta)) end
    -- `kind` and `attempts` when the caller has them already (saves reading the job again).
    -- Records are kept until the script ends, then written as one stream entry per up to
    -- `auditBatch` of them (`flushaudit`): one XADD per call instead of one per change.
    local auditlog = {}
    local function audit(event, id, from, to, now, detail, kind, attempts)
      if actor == '' then return end
      if kind == nil then
        local f = redis.call('HMGET', p .. 'job:' .. id, 'kind', 'attempts')
        kind, attempts = f[1], f[2]
      end
      auditlog[#auditlog + 1] = table.concat({event, id, from or '', to, attempts or '0', kind or '', now, detail or ''}, '\\31')
    end
    local function flushaudit()
      for first = 1, #auditlog, \(auditBatch) do
        local entry = {'v', '2', 'ac', actor}
        for j = first, math.min(#auditlog, first + \(auditBatch - 1)) do
          entry[#entry + 1] = 'r'
          entry[#entry + 1] = auditlog[j]
        end
        redis.call('XADD', p .. 'audit', '*', unpack(entry))
      end
    end
    -- `kinds` hash: available jobs per kind (for stats: kinds no live worker takes). Never below
    -- zero: jobs that were available before the hash existed are not counted until they leave.
    local function count(kind, n)
      if redis.call('HINCRBY', p .. 'kinds', kind, n) < 0 then redis.call('HSET', p .. 'kinds', kind, '0') end
    end
    local function counted(tally)
      for kind, n in pairs(tally) do count(kind, n) end
    end
    -- `needs`: available jobs that ask for something (resources or constraints); while there
    -- are none, a claim takes the first jobs without looking at them. Never below zero.
    local function needs(n)
      if redis.call('INCRBY', p .. 'needs', n) < 0 then redis.call('SET', p .. 'needs', '0') end
    end
    -- Out of the running set; a job with a concurrency key gives its key's slot back (`keyrun`
    -- hash: running jobs per key). A slot under a limit (its key's, or the queue's max running)
    -- that frees may let a waiting job start: idle workers on other hosts watch the enqueue
    -- counter (`<prefix>:enqueued`, beside the queue's keys), so it moves as an enqueue would.
    -- `known`: the job's `ckey` as the caller read it (false: none), nil to read it here. Whether
    -- the queue has a max running is read once per script call (no script here changes it).
    local limited = nil
    local function unrun(id, known)
      if redis.call('ZREM', p .. 'running', id) == 1 then
        local key = known
        if key == nil then key = redis.call('HGET', p .. 'job:' .. id, 'ckey') end
        if key and redis.call('HINCRBY', p .. 'keyrun', key, -1) <= 0 then redis.call('HDEL', p .. 'keyrun', key) end
        if not key and limited == nil then limited = redis.call('HEXISTS', p .. 'settings', 'max_running') == 1 end
        if key or limited then
          local prefix = string.match(p, '^(.*):{[^{]*}:$')
          if prefix then redis.call('INCR', prefix .. ':enqueued') end
        end
      end
    end
    -- The `n` (id, token) pairs of ARGV from `first`: each job's id, key, and 'held' while the
    -- lease of that token holds, else the job's state ('' for none).
    local function leases(first, n)
      local j = 0
      return function()
        if j >= n then return nil end
        local id, token = ARGV[first + 2 * j], ARGV[first + 2 * j + 1]
        j = j + 1
        local k = p .. 'job:' .. id
        local f = redis.call('HMGET', k, 'state', 'token')
        if f[1] == 'running' and f[2] == token then return id, k, 'held' end
        return id, k, f[1] or ''
      end
    end
    local function move(id, from, to, now, event, detail)
      if from == 'available' or to == 'available' then
        local f = redis.call('HMGET', p .. 'job:' .. id, 'kind', 'req', 'ckey')
        if f[1] then count(f[1], to == 'available' and 1 or -1) end
        if (f[2] and f[2] ~= '') or f[3] then needs(to == 'available' and 1 or -1) end
      end
      if from ~= 'running' and from ~= 'available' then redis.call('ZREM', p .. 'state:' .. from, id) end
      if to ~= 'running' and to ~= 'available' then redis.call('ZADD', p .. 'state:' .. to, '0', id) end
      redis.call('HSET', p .. 'job:' .. id, 'state', to, 'updated_at', now)
      audit(event, id, from, to, now, detail)
    end
    local function promote(now)
      local due = redis.call('ZRANGEBYSCORE', p .. 'delayed', '-inf', now, 'LIMIT', 0, 1000)
      for _, id in ipairs(due) do
        redis.call('ZREM', p .. 'delayed', id)
        local k = p .. 'job:' .. id
        local st = redis.call('HGET', k, 'state')
        if st == 'scheduled' or st == 'failed' then
          move(id, st, 'available', now, 'promoted')
          redis.call('ZADD', p .. 'available', redis.call('HGET', k, 'score'), id)
        end
      end
    end

    """

  /// KEYS[2]: the queue registry; KEYS[3]: the counter of enqueues that made jobs available. ARGV: now ('' for Redis's clock), count, then per job: id, kind, payload, priority,
  /// score (−priority), delay in ms (0 runs at once), max_attempts, idempotency key ('' for none),
  /// requirements (JSON, '' for none), concurrency key, its kind's max running and rate per key
  /// ('' for none).
  /// Returns per job: id, state, existing (1/0). A job id seen before is this same call retried
  /// after a lost reply: it reports the job as new, as the first answer would have. When an
  /// idempotency key was used for a job of another kind or payload, writes nothing and returns
  /// only that job's id, 'conflict', 2 and the key.
  static let enqueue = script(
    """
    local now = clock(ARGV[1])
    local n = tonumber(ARGV[2])
    local out = {}
    -- The queue is registered with every enqueue (KEYS[2] is the registry), so a registry
    -- lost in a failover or deleted never strands new jobs.
    redis.call('SADD', KEYS[2], string.match(p, '{(.*)}:$'))
    -- An idempotency key used before for a job of another kind or payload: nothing is
    -- written and the caller is told which job holds the key (409).
    for j = 0, n - 1 do
      local idem = ARGV[3 + j * 12 + 7]
      if idem ~= '' then
        local held = redis.call('HGET', p .. 'idem', idem)
        if held then
          local was = redis.call('HMGET', p .. 'job:' .. held, 'kind', 'payload')
          if was[1] and (was[1] ~= ARGV[3 + j * 12 + 1] or was[2] ~= ARGV[3 + j * 12 + 2]) then
            return {held, 'conflict', 2, idem}
          end
        end
      end
    end
    local i = 3
    local tally = {}
    for _ = 1, n do
      local id, kind, payload, prio, score = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
      local delay, maxa, idem, req = ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], ARGV[i + 8]
      local ckey, kmax, krate = ARGV[i + 9], ARGV[i + 10], ARGV[i + 11]
      local runat = plus(now, delay)
      local state = tonumber(delay) > 0 and 'scheduled' or 'available'
      i = i + 12
      local existing = false
      if idem ~= '' then existing = redis.call('HGET', p .. 'idem', idem) end
      if not existing and redis.call('EXISTS', p .. 'job:' .. id) == 1 then existing = id end
      if existing then
        out[#out + 1] = existing
        out[#out + 1] = redis.call('HGET', p .. 'job:' .. existing, 'state') or 'available'
        out[#out + 1] = existing == id and 0 or 1
      else
        local k = p .. 'job:' .. id
        redis.call('HSET', k, 'id', id, 'kind', kind, 'payload', payload, 'priority', prio, 'score', score,
          'state', state, 'run_at', runat, 'attempts', '0', 'max_attempts', maxa, 'created_at', now,
          'updated_at', now, 'token', '0')
        if idem ~= '' then
          redis.call('HSET', k, 'idem', idem)
          redis.call('HSET', p .. 'idem', idem, id)
        end
        if req ~= '' then redis.call('HSET', k, 'req', req) end
        if ckey ~= '' then redis.call('HSET', k, 'ckey', ckey) end
        if kmax ~= '' then redis.call('HSET', k, 'kmax', kmax) end
        if krate ~= '' then redis.call('HSET', k, 'krate', krate) end
        if state == 'available' then
          redis.call('ZADD', p .. 'available', score, id)
          tally[kind] = (tally[kind] or 0) + 1
          if req ~= '' or ckey ~= '' then needs(1) end
        else
          redis.call('ZADD', p .. 'delayed', runat, id)
        end
        if state ~= 'available' then redis.call('ZADD', p .. 'state:' .. state, '0', id) end
        audit('enqueued', id, nil, state, now, nil, kind, '0')
        out[#out + 1] = id
        out[#out + 1] = state
        out[#out + 1] = 0
      end
    end
    counted(tally)
    -- Idle workers on other hosts watch this counter (KEYS[3]) to claim new jobs at once.
    if next(tally) ~= nil and KEYS[3] then redis.call('INCR', KEYS[3]) end
    return out
    """)

  /// What both claim scripts share. ARGV: now ('' for Redis's clock), limit, worker, lease in
  /// ms, how many of the claimed start at once, the claim's id (chosen by the client). The same
  /// claim id again (the client retrying after a lost reply) returns the batch that id leased,
  /// minus jobs no longer held by it, instead of leasing another batch nobody holds. `take`
  /// leases one job (already out of the `available` set) and adds its `claimFields` to `out`.
  private static let claimHead = """
    local now, limit, worker = clock(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
    local expires = plus(now, ARGV[4])
    local starting, cid = tonumber(ARGV[5]), ARGV[6]
    local ck = p .. 'claim:' .. cid
    local prior = redis.call('GET', ck)
    if prior then
      local out = {}
      for word in string.gmatch(prior, '%S+') do
        if #out < 2 then
          out[#out + 1] = word
        else
          local id, token = string.match(word, '^(.*):(%d+)$')
          local k = p .. 'job:' .. id
          local f = redis.call('HMGET', k, 'state', 'token')
          if f[1] == 'running' and f[2] == token then
            out[#out + 1] = redis.call('HMGET', k, \(claimFieldList))
          end
        end
      end
      return out
    end
    local out = {now, expires}
    local record = {now, expires}
    local tally = {}
    -- Flow control (`settings` hash): paused hands out nothing; max_running bounds the leases;
    -- rate is a token bucket of one second's worth, refilled on Redis's clock or the caller's.
    local settings = redis.call('HMGET', p .. 'settings', 'paused', 'max_running', 'rate', 'tokens', 'refilled_at', 'weight',
      'max_running_per_key', 'rate_per_key')
    local controlled = settings[1] or settings[2] or settings[3] or settings[6]
    local bucket
    if settings[1] == '1' then limit = 0 end
    if settings[2] then limit = math.min(limit, math.max(0, tonumber(settings[2]) - redis.call('ZCARD', p .. 'running'))) end
    if settings[3] then
      local rate = tonumber(settings[3])
      local burst = math.max(1, rate)
      bucket = burst
      local at = tonumber(settings[5] or '0')
      if at > 0 then bucket = math.min(burst, tonumber(settings[4] or '0') + (tonumber(now) - at) / 1000 * rate) end
      limit = math.min(limit, math.floor(bucket))
    end
    -- Whether one more job of `id`'s concurrency key may start (a job without one always may);
    -- when it may, its key's running count and rate bucket take it at once, so the next
    -- candidate of the same key sees it.
    -- The limits on a job's key (fields ckey, kmax, krate): its own, tightened by the queue's.
    local function keylimits(f)
      local kmax, krate = tonumber(f[2] or ''), tonumber(f[3] or '')
      if settings[7] and (not kmax or tonumber(settings[7]) < kmax) then kmax = tonumber(settings[7]) end
      if settings[8] and (not krate or tonumber(settings[8]) < krate) then krate = tonumber(settings[8]) end
      return kmax, krate
    end
    -- The tokens of a key's rate bucket now (as this script has spent them).
    local keytokens = {}
    local function tokensof(key, krate)
      local tokens = keytokens[key]
      if not tokens then
        local burst = math.max(1, krate)
        tokens = burst
        local b = redis.call('HMGET', p .. 'keybuckets', key .. '|t', key .. '|at')
        if b[1] and b[2] then tokens = math.min(burst, tonumber(b[1]) + (tonumber(now) - tonumber(b[2])) / 1000 * krate) end
        keytokens[key] = tokens
      end
      return tokens
    end
    local function keyok(id)
      local f = redis.call('HMGET', p .. 'job:' .. id, 'ckey', 'kmax', 'krate')
      local key = f[1]
      if not key then return true end
      local kmax, krate = keylimits(f)
      if kmax and tonumber(redis.call('HGET', p .. 'keyrun', key) or '0') >= kmax then return false end
      if krate then
        local tokens = tokensof(key, krate)
        if tokens < 1 then return false end
        keytokens[key] = tokens - 1
        -- With when it is full again: from then on purges delete it (`purgeKeyBuckets`).
        local full = tonumber(now) + math.floor((math.max(1, krate) - tokens + 1) / krate * 1000) + 1
        redis.call('HSET', p .. 'keybuckets', key .. '|t', string.format('%.4f', tokens - 1), key .. '|at', now,
          key .. '|full', string.format('%d', full))
      end
      redis.call('HINCRBY', p .. 'keyrun', key, 1)
      return true
    end
    -- One read and one write per job: the token and attempts are counted up from what the
    -- read returned (two HINCRBYs cost more), and the reply is patched to match.
    -- `read`: the job's `claimFields` when the caller has read them already.
    local function take(id, placement, read)
      local k = p .. 'job:' .. id
      local fields = read or redis.call('HMGET', k, \(claimFieldList))
      local token = string.format('%d', tonumber(fields[10] or '0') + 1)
      local attempts = string.format('%d', tonumber(fields[6] or '0') + 1)
      local started = (#out - 1 <= starting) and '1' or '0'
      redis.call('HSET', k, 'token', token, 'attempts', attempts, 'state', 'running', 'lease_owner', worker,
        'lease_expires_at', expires, 'started_at', now, 'updated_at', now, 'started', started)
      if placement ~= '' then
        redis.call('HSET', k, 'placement', placement)
        redis.call('HDEL', k, 'rsv_by', 'rsv_until')
        fields[13] = placement
      end
      fields[6], fields[10], fields[11] = attempts, token, started
      redis.call('ZADD', p .. 'running', expires, id)
      audit('claimed', id, 'available', 'running', now, worker, fields[2], attempts)
      record[#record + 1] = id .. ':' .. token
      tally[fields[2]] = (tally[fields[2]] or 0) - 1
      if (fields[12] and fields[12] ~= '') or fields[14] then needs(-1) end
      out[#out + 1] = fields
    end
    local function finish()
      counted(tally)
      if controlled then
        local taken = #out - 2
        if bucket then
          redis.call('HSET', p .. 'settings', 'tokens', string.format('%.4f', bucket - taken), 'refilled_at', now)
        end
        if taken > 0 then redis.call('HINCRBY', p .. 'settings', 'served', taken) end
      end
      -- Kept for as long as the leases: a retry after that finds nothing to return.
      if #record > 2 then redis.call('SET', ck, table.concat(record, ' '), 'PX', math.max(tonumber(ARGV[4]), 1000)) end
      return out
    end

    """

  /// ARGV: those of `claimHead`, then the number of kind patterns, the patterns (anchored Lua
  /// patterns; none takes every kind), and, when the worker sent its free capacity (it can place
  /// jobs that ask for something), that capacity in brief: "gpus cpus memory_mib least-GPU-memory
  /// most-GPU-memory reservation-wait-ms full", full 1 for a list that does not end early ('' when
  /// it sent none). Promotes due delayed jobs, then leases up to `limit`
  /// available jobs of those kinds that ask for nothing. Jobs of other kinds, and jobs that ask
  /// for something, are passed over: the scan looks at up to `kindScanLimit` of the queue's
  /// first available jobs per claim.
  /// Returns now, the leases' expiry, then per job the fields of `claimFields` in that order (by
  /// position: cheaper to make and to parse than HGETALL's names and values). When jobs that ask
  /// for something wait and the worker can place, leases nothing and returns 'place', now, '1'
  /// when the list ended early (it holds `limit` jobs that surely fit) or '0', then the first
  /// available jobs of its kinds that may fit as id, requirements ('' for none), run_at, reserved
  /// by and reserved until, in order, for `claimPlaced`.
  static let claim = script(
    claimHead + """
      promote(now)
      if limit <= 0 then return out end
      local nk = tonumber(ARGV[7])
      local placing = ARGV[8 + nk] ~= ''
      local waiting = tonumber(redis.call('GET', p .. 'needs') or '0') > 0
      local function kindwanted(kind)
        if nk == 0 then return true end
        for q = 1, nk do
          if kind and string.find(kind, ARGV[7 + q]) then return true end
        end
        return false
      end
      local function wanted(id)
        return nk == 0 or kindwanted(redis.call('HGET', p .. 'job:' .. id, 'kind'))
      end
      -- Whether every kind the `kinds` hash counts available jobs of is one the worker takes:
      -- then a claim pops the first jobs as an unfiltered one does instead of scanning.
      local function onlywantedkinds()
        if redis.call('HLEN', p .. 'kinds') > 64 then return false end
        local all = redis.call('HGETALL', p .. 'kinds')
        for j = 1, #all, 2 do
          if all[j + 1] ~= '0' and not kindwanted(all[j]) then return false end
        end
        return true
      end
      if waiting and placing then
        -- What the worker has free: GPUs, CPUs, memory, the least and the most memory of a free
        -- GPU, and the reservation wait in ms (-1: none). Jobs whose requests exceed it are left
        -- out (unless starving: the worker may reserve its host for them), as are those whose key
        -- is at its limit; the list ends once it holds `limit` jobs that surely fit (no
        -- constraint, no key, requests within what is left), since the worker takes those first.
        local free = {}
        for v in string.gmatch(ARGV[8 + nk], '[^ ]+') do free[#free + 1] = tonumber(v) end
        local lg, lc, lm, gmin, gmax, patience, full = free[1], free[2], free[3], free[4], free[5], free[6], free[7] == 1
        local starving = patience >= 0 and tonumber(now) - patience or nil
        local shapes, listedkeys, sure = {}, {}, 0
        local list = {'place', now, '0'}
        local offset = 0
        while #list - 3 < (limit + \(placementScan)) * 5 and offset < \(kindScanLimit) and (full or sure < limit) do
          local window = redis.call('ZRANGE', p .. 'available', offset, offset + 499)
          if #window == 0 then break end
          for j = 1, #window do
            if wanted(window[j]) then
              local f = redis.call('HMGET', p .. 'job:' .. window[j], 'req', 'run_at', 'rsv_by', 'rsv_until', 'ckey', 'kmax', 'krate')
              local req = f[1] or ''
              local shape = {g = 0, c = 0, m = 0, gm = 0, plain = true}
              if req ~= '' then
                shape = shapes[req]
                if not shape then
                  shape = {g = 0, c = 0, m = 0, gm = 0, plain = false}
                  local ok, r = pcall(cjson.decode, req)
                  if ok and type(r) == 'table' then
                    local res = type(r.resources) == 'table' and r.resources or {}
                    shape.g, shape.c = tonumber(res.gpus) or 0, tonumber(res.cpus) or 0
                    shape.m, shape.gm = tonumber(res.memory_mib) or 0, tonumber(res.gpu_memory_mib) or 0
                    local c = r.constraints
                    shape.plain = type(c) ~= 'table'
                      or (type(c.gpu_model) ~= 'string' and type(c.host) ~= 'string' and (type(c.labels) ~= 'table' or next(c.labels) == nil))
                  end
                  shapes[req] = shape
                end
              end
              local fits = shape.g <= lg and shape.c <= lc and shape.m <= lm and (shape.g == 0 or shape.gm <= gmax)
              local room = true
              local key = f[5]
              if key then
                local kmax, krate = keylimits({key, f[6], f[7]})
                local listed = listedkeys[key] or 0
                if kmax and tonumber(redis.call('HGET', p .. 'keyrun', key) or '0') + listed >= kmax then room = false end
                if krate and tokensof(key, krate) - listed < 1 then room = false end
              end
              if room and (fits or (starving and tonumber(f[2] or '0') <= starving)) then
                list[#list + 1] = window[j]
                list[#list + 1] = req
                list[#list + 1] = f[2] or '0'
                list[#list + 1] = f[3] or ''
                list[#list + 1] = f[4] or '0'
                if key then listedkeys[key] = (listedkeys[key] or 0) + 1 end
                if fits and shape.plain and not key and (shape.g == 0 or shape.gm <= gmin) then
                  lg, lc, lm = lg - shape.g, lc - shape.c, lm - shape.m
                  sure = sure + 1
                  if sure >= limit and not full then
                    list[3] = '1'
                    break
                  end
                end
              end
            end
          end
          offset = offset + 500
        end
        return list
      end
      local picked = {}
      -- Looks at up to `kindScanLimit` of the first available jobs for `want` more to lease.
      local function scan(want)
        local offset = 0
        local found = {}
        while #found < want and offset < \(kindScanLimit) do
          local window = redis.call('ZRANGE', p .. 'available', offset, offset + 499)
          if #window == 0 then break end
          for j = 1, #window do
            local id = window[j]
            if wanted(id) then
              local req = waiting and redis.call('HGET', p .. 'job:' .. id, 'req') or ''
              if (not req or req == '') and keyok(id) then
                found[#found + 1] = id
                if #found >= want then break end
              end
            end
          end
          offset = offset + 500
        end
        for j = 1, #found do
          redis.call('ZREM', p .. 'available', found[j])
          picked[#picked + 1] = found[j]
        end
      end
      if not waiting and (nk == 0 or onlywantedkinds()) then
        local popped = redis.call('ZPOPMIN', p .. 'available', limit)
        local passed = false
        -- Each popped job's fields are read once, for the checks here and for its lease.
        local taken = {}
        for j = 1, #popped, 2 do
          local f = redis.call('HMGET', p .. 'job:' .. popped[j], \(claimFieldList))
          if (f[12] and f[12] ~= '') or f[14] then
            -- The count was off (a key changed by hand): the job goes back and is counted.
            redis.call('ZADD', p .. 'available', popped[j + 1], popped[j])
            needs(1)
          elseif not kindwanted(f[2]) then
            -- A kind the hash does not count (a job from before it existed): back it goes, and
            -- the jobs behind it are scanned for.
            redis.call('ZADD', p .. 'available', popped[j + 1], popped[j])
            passed = true
          else
            taken[#taken + 1] = f
            picked[#picked + 1] = popped[j]
          end
        end
        if passed then scan(limit - #picked) end
        for j = 1, #picked do take(picked[j], '', taken[j]) end
      else
        scan(limit)
        for j = 1, #picked do take(picked[j], '') end
      end
      return finish()
      """)

  /// ARGV: those of `claimHead`, then the number of jobs, then per job its id and placement
  /// (JSON, '' for a job that asks for nothing), as the worker's side placed them from what
  /// `claim` listed, then the number of jobs to reserve the host for and their ids. Leases each
  /// that is still available, reserves the others; returns as `claim` does.
  static let claimPlaced = script(
    claimHead + """
      local n = tonumber(ARGV[7])
      for j = 0, n - 1 do
        if #out - 2 >= limit then break end
        local id = ARGV[8 + j * 2]
        if redis.call('ZSCORE', p .. 'available', id) and keyok(id) then
          redis.call('ZREM', p .. 'available', id)
          take(id, ARGV[9 + j * 2])
        end
      end
      -- Then the jobs this worker reserves its host for, held as long as a lease.
      local reserving = tonumber(ARGV[8 + n * 2] or '0')
      for j = 1, reserving do
        local id = ARGV[8 + n * 2 + j]
        if redis.call('ZSCORE', p .. 'available', id) then
          redis.call('HSET', p .. 'job:' .. id, 'rsv_by', worker, 'rsv_until', expires)
        end
      end
      return finish()
      """)

  /// How many jobs beyond its limit a placing claim looks at: jobs that fit nowhere near the
  /// front do not hide those behind them that fit.
  static let placementScan = 500

  /// How many of a queue's first available jobs a claim with a kind filter looks at.
  static let kindScanLimit = 10_000

  /// A script: `body` runs as a function after the helpers, and the audit records it made are
  /// written when it returns, whichever `return` it took.
  private static func script(_ body: String) -> RedisScript {
    RedisScript(helpers + "local function main()\n" + body + "\nend\nlocal result = main()\nflushaudit()\nreturn result\n")
  }

  /// The most audit records one stream entry holds (a reap of 1,000 jobs writes four entries).
  static let auditBatch = 256

  /// The fields a claim returns, in order.
  static let claimFields = [
    "id", "kind", "payload", "priority", "run_at", "attempts", "max_attempts", "idem", "created_at", "token", "started", "req", "placement",
    "ckey",
  ]

  /// `claimFields` as HMGET's arguments in Lua.
  static let claimFieldList = claimFields.map { "'\($0)'" }.joined(separator: ", ")

  /// ARGV: now ('' for Redis's clock), count, then per job: id, token, result ('' for none, else '=' .. json).
  /// Returns 1 per job recorded (or already recorded with the same token), 0 when the lease was lost.
  static let complete = script(
    """
    local now, n = clock(ARGV[1]), tonumber(ARGV[2])
    local out = {}
    local i = 3
    for _ = 1, n do
      local id, token, result = ARGV[i], ARGV[i + 1], ARGV[i + 2]
      i = i + 3
      local k = p .. 'job:' .. id
      local fields = redis.call('HMGET', k, 'state', 'token', 'kind', 'attempts', 'ckey')
      if fields[1] == 'running' and fields[2] == token then
        -- An empty lease_expires_at reads as none (cheaper than a separate HDEL).
        if result ~= '' then
          redis.call('HSET', k, 'state', 'succeeded', 'finished_at', now, 'updated_at', now,
            'lease_expires_at', '', 'result', string.sub(result, 2))
        else
          redis.call('HSET', k, 'state', 'succeeded', 'finished_at', now, 'updated_at', now, 'lease_expires_at', '')
        end
        unrun(id, fields[5])
        redis.call('ZADD', p .. 'state:succeeded', '0', id)
        audit('completed', id, 'running', 'succeeded', now, nil, fields[3], fields[4])
        out[#out + 1] = 1
      elseif fields[1] == 'succeeded' and fields[2] == token then
        out[#out + 1] = 1
      else
        out[#out + 1] = 0
      end
    end
    return out
    """)

  /// ARGV: now ('' for Redis's clock), id, token, error, retryable (1/0), base delay ms, max delay ms, jitter, random.
  /// Returns {'retry', run_at} | {'dead'} | {'lost'}. The same call again (a retry after a lost
  /// reply) returns the first answer: `failed_by` remembers the lease whose failure was recorded.
  static let fail = script(
    """
    local now, id, token, err = tonumber(clock(ARGV[1])), ARGV[2], ARGV[3], ARGV[4]
    local retryable = ARGV[5] == '1'
    local base, maxd, jitter, rnd = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
    local k = p .. 'job:' .. id
    local f = redis.call('HMGET', k, 'state', 'token', 'attempts', 'max_attempts', 'failed_by', 'run_at')
    if f[2] == token and f[5] == token then
      if f[1] == 'failed' then return {'retry', f[6]} end
      if f[1] == 'dead' then return {'dead'} end
    end
    if f[1] ~= 'running' or f[2] ~= token then return {'lost'} end
    local attempts, maxa = tonumber(f[3]), tonumber(f[4])
    unrun(id)
    redis.call('HDEL', k, 'lease_owner', 'lease_expires_at')
    redis.call('HSET', k, 'last_error', err, 'failed_by', token)
    if retryable and attempts < maxa then
      local raw = math.min(maxd, base * math.pow(2, math.min(attempts - 1, 62)))
      local runat = now + math.floor(raw * (1 - jitter) + raw * jitter * rnd)
      redis.call('HSET', k, 'run_at', runat)
      move(id, 'running', 'failed', now, 'failed', err)
      redis.call('ZADD', p .. 'delayed', runat, id)
      return {'retry', runat}
    end
    redis.call('HSET', k, 'finished_at', now)
    move(id, 'running', 'dead', now, 'dead', err)
    return {'dead'}
    """)

  /// ARGV: count, then per lease: id, token. Marks the jobs whose lease still holds as started:
  /// from then on a lost lease counts their attempt.
  static let start = script(
    """
    local n = tonumber(ARGV[1])
    for _, k, state in leases(2, n) do
      if state == 'held' then redis.call('HSET', k, 'started', '1') end
    end
    return n
    """)

  /// ARGV: now ('' for Redis's clock), lease in ms, count, then per lease: id, token. Returns the new expiry, then
  /// 'ok' | 'cancelled' | 'lost' per lease.
  static let heartbeat = script(
    """
    local now, n = clock(ARGV[1]), tonumber(ARGV[3])
    local expires = plus(now, ARGV[2])
    local out = {expires}
    for id, k, state in leases(4, n) do
      if state == 'held' then
        redis.call('HSET', k, 'lease_expires_at', expires, 'updated_at', now)
        redis.call('ZADD', p .. 'running', expires, id)
        out[#out + 1] = 'ok'
      elseif state == 'cancelled' then
        out[#out + 1] = 'cancelled'
      else
        out[#out + 1] = 'lost'
      end
    end
    return out
    """)

  /// ARGV: now ('' for Redis's clock), count, then per lease: id, token. Gives running jobs back without counting
  /// the attempt. Returns how many were given back (a lost lease is skipped).
  static let release = script(
    """
    local now, n = clock(ARGV[1]), tonumber(ARGV[2])
    local released = 0
    for j = 0, n - 1 do
      local id, token = ARGV[3 + 2 * j], ARGV[4 + 2 * j]
      local k = p .. 'job:' .. id
      local f = redis.call('HMGET', k, 'state', 'token', 'score', 'attempts', 'started', 'returns', 'max_attempts')
      if f[1] == 'running' and f[2] == token then
        unrun(id)
        redis.call('HDEL', k, 'lease_owner', 'lease_expires_at')
        local returns = tonumber(f[6] or '0')
        if f[5] == '1' then redis.call('HSET', k, 'returns', string.format('%d', returns + 1)) end
        if f[5] == '1' and returns >= \(RedisJobQueue.freeReturns) then
          -- A started attempt given back too often (a hung handler released on every restart of
          -- its worker) counts, and the job goes dead when it was the last.
          local why = 'released ' .. string.format('%d', returns + 1) .. ' times after it started'
          redis.call('HSET', k, 'last_error', why)
          if tonumber(f[4]) >= tonumber(f[7]) then
            redis.call('HSET', k, 'finished_at', now)
            move(id, 'running', 'dead', now, 'dead', why)
          else
            move(id, 'running', 'available', now, 'released')
            redis.call('ZADD', p .. 'available', f[3], id)
          end
        else
          redis.call('HSET', k, 'attempts', string.format('%d', math.max(tonumber(f[4]) - 1, 0)))
          move(id, 'running', 'available', now, 'released')
          redis.call('ZADD', p .. 'available', f[3], id)
        end
        released = released + 1
      end
    end
    return released
    """)

  /// ARGV: now ('' for Redis's clock), id. Returns the job's HGETALL after cancelling, or an error reply
  /// 'NOVA notfound' / 'NOVA state <state>'.
  static let cancel = script(
    """
    local now, id = clock(ARGV[1]), ARGV[2]
    local k = p .. 'job:' .. id
    local st = redis.call('HGET', k, 'state')
    if not st then return redis.error_reply('NOVA notfound') end
    if st == 'cancelled' then return redis.call('HGETALL', k) end
    if st == 'succeeded' or st == 'dead' then return redis.error_reply('NOVA state ' .. st) end
    redis.call('ZREM', p .. 'available', id)
    redis.call('ZREM', p .. 'delayed', id)
    unrun(id)
    redis.call('HDEL', k, 'lease_owner', 'lease_expires_at')
    redis.call('HSET', k, 'finished_at', now)
    move(id, st, 'cancelled', now, 'cancelled')
    return redis.call('HGETALL', k)
    """)

  /// ARGV: now ('' for Redis's clock), id, request id. Puts a dead, cancelled or failed job back to available with
  /// attempts reset. The same request again (a retry after a lost reply) returns the job.
  static let retry = script(
    """
    local now, id, request = clock(ARGV[1]), ARGV[2], ARGV[3]
    local k = p .. 'job:' .. id
    local st = redis.call('HGET', k, 'state')
    if not st then return redis.error_reply('NOVA notfound') end
    if st ~= 'dead' and st ~= 'cancelled' and st ~= 'failed' then
      if redis.call('HGET', k, 'retried_by') == request then return redis.call('HGETALL', k) end
      return redis.error_reply('NOVA state ' .. st)
    end
    redis.call('ZREM', p .. 'delayed', id)
    redis.call('HDEL', k, 'finished_at')
    redis.call('HSET', k, 'attempts', '0', 'returns', '0', 'run_at', now, 'retried_by', request)
    move(id, st, 'available', now, 'retried')
    redis.call('ZADD', p .. 'available', redis.call('HGET', k, 'score'), id)
    return redis.call('HGETALL', k)
    """)

  /// ARGV: now ('' for Redis's clock). Returns {requeued ids..., '|', dead ids...}.
  static let reap = script(
    """
    local now = clock(ARGV[1])
    local expired = redis.call('ZRANGEBYSCORE', p .. 'running', '-inf', '(' .. now, 'LIMIT', 0, 1000)
    local requeued, dead = {}, {}
    for _, id in ipairs(expired) do
      local k = p .. 'job:' .. id
      unrun(id)
      local f = redis.call('HMGET', k, 'state', 'attempts', 'max_attempts', 'score', 'started', 'returns')
      if f[1] == 'running' and f[5] == '0' and tonumber(f[6] or '0') < \(RedisJobQueue.freeReturns) then
        -- Claimed ahead but never started (its worker died with it buffered): not an attempt,
        -- a bounded number of times (start marks land just after a handler starts).
        redis.call('HDEL', k, 'lease_owner', 'lease_expires_at')
        redis.call('HSET', k, 'attempts', string.format('%d', math.max(tonumber(f[2]) - 1, 0)),
          'returns', string.format('%d', tonumber(f[6] or '0') + 1))
        move(id, 'running', 'available', now, 'requeued', 'lease expired before the job started')
        redis.call('ZADD', p .. 'available', f[4], id)
        requeued[#requeued + 1] = id
      elseif f[1] == 'running' then
        redis.call('HDEL', k, 'lease_owner', 'lease_expires_at')
        redis.call('HSET', k, 'last_error', 'lease expired: the worker stopped heartbeating')
        if tonumber(f[2]) >= tonumber(f[3]) then
          redis.call('HSET', k, 'finished_at', now)
          move(id, 'running', 'dead', now, 'dead', 'lease expired')
          dead[#dead + 1] = id
        else
          move(id, 'running', 'available', now, 'requeued', 'lease expired')
          redis.call('ZADD', p .. 'available', f[4], id)
          requeued[#requeued + 1] = id
        end
      end
    end
    local out = requeued
    out[#out + 1] = '|'
    for _, id in ipairs(dead) do out[#out + 1] = id end
    return out
    """)

  /// ARGV: cursor ('' for none), n. The newest `n` available jobs with ids below the cursor,
  /// newest first. The `available` set orders by score (−priority), then id: each score's run of
  /// ranks is found, the cursor's place in it by a binary search on rank, and the runs are read
  /// from there down a chunk at a time and merged. A page reads about `n` ids and a chunk per
  /// priority present, however many jobs wait.
  static let listAvailable = script(
    """
    local cursor, n = ARGV[1], tonumber(ARGV[2])
    local chunk = math.min(n, 32)
    local key = p .. 'available'
    -- Per run: its first rank, the rank below which nothing is read yet, the ids read (ascending)
    -- and how many of them are left.
    local runs = {}
    local function refill(run)
      if run.top <= run.a then return end
      local from = math.max(run.a, run.top - chunk)
      run.ids = redis.call('ZRANGE', key, from, run.top - 1)
      run.left = #run.ids
      run.top = from
    end
    local low = '-inf'
    while true do
      local first = redis.call('ZRANGEBYSCORE', key, low, '+inf', 'WITHSCORES', 'LIMIT', '0', '1')
      if #first == 0 then break end
      local score = first[2]
      local a = redis.call('ZRANK', key, first[1])
      local b = a + redis.call('ZCOUNT', key, score, score)
      -- The first rank of the run whose id is not below the cursor (b when none).
      local hi = b
      if cursor ~= '' then
        local lo = a
        while lo < hi do
          local mid = math.floor((lo + hi) / 2)
          if redis.call('ZRANGE', key, mid, mid)[1] < cursor then lo = mid + 1 else hi = mid end
        end
      end
      local run = {a = a, top = hi, ids = {}, left = 0}
      refill(run)
      if run.left > 0 then runs[#runs + 1] = run end
      low = '(' .. score
    end
    local out = {}
    while #out < n do
      local best = nil
      for _, run in ipairs(runs) do
        if run.left > 0 and (best == nil or run.ids[run.left] > best.ids[best.left]) then best = run end
      end
      if best == nil then break end
      out[#out + 1] = best.ids[best.left]
      best.left = best.left - 1
      if best.left == 0 then refill(best) end
    end
    return out
    """)

  /// ARGV: cutoff (ms), lowest id made at the cutoff, state, cursor (the last id looked at, ''
  /// at first). Looks at up to 1000 ids of the state's set after the cursor and below the bound
  /// (a job that finished before the cutoff was created before it) and deletes those that
  /// finished before the cutoff; returns {deleted, next cursor or '' when the range is done}.
  /// Old jobs that finished recently are stepped over, so they never stall the purge.
  static let purge = script(
    """
    local cutoff, bound, state, after = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
    local low = after == '' and '-' or ('(' .. after)
    local ids = redis.call('ZRANGEBYLEX', p .. 'state:' .. state, low, '(' .. bound, 'LIMIT', 0, 1000)
    local deleted = 0
    for _, id in ipairs(ids) do
      local k = p .. 'job:' .. id
      local f = redis.call('HMGET', k, 'finished_at', 'idem')
      if not f[1] or tonumber(f[1]) < cutoff then
        if f[2] then redis.call('HDEL', p .. 'idem', f[2]) end
        redis.call('ZREM', p .. 'state:' .. state, id)
        redis.call('DEL', k)
        -- The job's output goes with it.
        -- UNLINK: a long log is freed in the background, not while the script holds Redis.
        redis.call('UNLINK', p .. 'log:' .. id)
        deleted = deleted + 1
      end
    end
    if #ids < 1000 then return {deleted, ''} end
    return {deleted, ids[#ids]}
    """)

  /// ARGV: job ids (then the actor). Deletes those that are succeeded, dead or cancelled, with
  /// their idempotency key and output; returns how many.
  static let delete = script(
    """
    local deleted = 0
    for i = 1, #ARGV - 1 do
      local id = ARGV[i]
      local k = p .. 'job:' .. id
      local f = redis.call('HMGET', k, 'state', 'idem')
      if f[1] == 'succeeded' or f[1] == 'dead' or f[1] == 'cancelled' then
        if f[2] then redis.call('HDEL', p .. 'idem', f[2]) end
        redis.call('ZREM', p .. 'state:' .. f[1], id)
        redis.call('DEL', k)
        redis.call('UNLINK', p .. 'log:' .. id)
        deleted = deleted + 1
      end
    end
    return deleted
    """)

  /// ARGV: now ('' for Redis's clock), the HSCAN cursor ('0' to begin). Deletes the per-key rate
  /// buckets that are full again (as good as absent) among about 1,000 fields of `keybuckets`;
  /// returns the number deleted and the next cursor ('0' when done). Buckets written before
  /// they carried `|full` are left alone.
  static let purgeKeyBuckets = script(
    """
    local now = tonumber(clock(ARGV[1]))
    local page = redis.call('HSCAN', p .. 'keybuckets', ARGV[2], 'MATCH', '*|full', 'COUNT', 1000)
    local deleted = 0
    for j = 1, #page[2], 2 do
      if tonumber(page[2][j + 1]) < now then
        local key = string.sub(page[2][j], 1, -6)
        redis.call('HDEL', p .. 'keybuckets', key .. '|t', key .. '|at', key .. '|full')
        deleted = deleted + 1
      end
    end
    return {deleted, page[1]}
    """)
}
