-- Rate budgets of model providers (README "Rate limits"): the Lua side of
-- core/ratelimit.c. Every state of an app (workers and the host) takes
-- budget from the same C object, keyed by the provider, before each
-- request, and gives it back with the tokens the provider reported.
local compat = require("luagent.compat")
local core = require("luagent.core")
local options = require("luagent.options")
local usage = require("luagent.usage")

local ratelimit = {}

local function positive(v) return options.positive(v) end

ratelimit.spec = {
  requests_per_minute = options.at_least(1),
  tokens_per_minute = options.at_least(1),
  max_concurrency = options.at_least(1),
  -- the window's length: "per minute" is per window_s seconds (tests use 1)
  window_s = positive,
  key = options.text_id,
}

-- Check `limits` (a model's) for `where`; returns it.
function ratelimit.check(where, limits, level)
  if limits == nil then return nil end
  options.check(where .. ": limits", limits, ratelimit.spec, (level or 2) + 1)
  return limits
end

-- The provider a model's calls count against: limits.key, else the
-- endpoint, else the model's name.
function ratelimit.key_of(model)
  local l = type(model.limits) == "table" and model.limits.key
  return l or model.base_url or model.model or model.name or "model"
end

-- Budgets this state has already told the core about, per app handle.
local defined = setmetatable({}, { __mode = "k" })

local function define(handle, key, limits)
  local seen = defined[handle]
  if not seen then
    seen = {}
    defined[handle] = seen
  end
  if seen[key] then return end
  limits = limits or {}
  handle:rate_define(key, { requests = limits.requests_per_minute, tokens = limits.tokens_per_minute,
    max_concurrency = limits.max_concurrency, window_s = limits.window_s })
  seen[key] = true
end

local Grant = {}
Grant.__index = Grant

-- The call ended: `used` tokens (nil: the estimate stands) and, after a
-- 429, a pause of pause_s seconds for every caller of the provider.
function Grant:done(used, pause_s)
  if self.over then return end
  self.over = true
  self.handle:rate_done(self.key, self.est, self.probe, compat.tointeger(used) or -1, pause_s or 0)
end

-- A grant left by an error (a cancel, a raising model) is given back.
Grant.__close = function(self) self:done() end

-- Take budget for one request of about `est` tokens from the budget `key`
-- (limits: the model's), waiting as long as it takes, at most timeout_s
-- (nil: no bound). Waiting leaves a `rate_wait` event. Returns a grant, or
-- nil when timeout_s passed; raises the cancel error (and the run's wall
-- budget) at once when the run must stop.
function ratelimit.acquire(ctx, key, limits, est, timeout_s)
  local env = ctx._env
  local handle = env.core
  define(handle, key, limits)
  est = math.max(0, compat.tointeger(est) or 0)
  local ok, a, b = handle:rate_try(key, est)
  if not ok then
    ctx:emit("rate_wait", { provider = key, reason = a, wait_s = b > 0 and b or nil })
    local d = ctx._deadline
    local bound = timeout_s
    if d then
      local left = math.max(0, d.at - core.now())
      if not bound or left < bound then bound = left end
    end
    ok, a = env.rate_wait(ctx, key, est, bound)
    if not ok then
      ctx:check_cancel() -- the run's wall budget, when that is what ran out
      return nil
    end
  end
  return setmetatable({ handle = handle, key = key, est = est, probe = a or false }, Grant)
end

-- Tokens a request will use, as far as is known before it is sent: the
-- prompt's estimate (a token per 4 bytes).
function ratelimit.estimate(request)
  return usage.estimate(request, {}).prompt_tokens
end

-- For models that do not take budget themselves: a grant for one call of
-- `model` on `request`, or nil when it has no limits.
function ratelimit.for_call(ctx, model, request)
  if model.limits == nil or model.own_limits then return nil end
  return ratelimit.acquire(ctx, ratelimit.key_of(model), model.limits, ratelimit.estimate(request))
end

return ratelimit
