-- Option-table and argument checking for the public API. Typos in option
-- names are the most common mistake, so unknown keys raise with the nearest
-- known name as a suggestion instead of being silently ignored.
local compat = require("luagent.compat")
local options = {}

local function levenshtein(a, b)
  local la, lb = #a, #b
  if la == 0 then return lb end
  if lb == 0 then return la end
  local prev, cur = {}, {}
  for j = 0, lb do prev[j] = j end
  for i = 1, la do
    cur[0] = i
    local ca = a:byte(i)
    for j = 1, lb do
      local cost = (ca == b:byte(j)) and 0 or 1
      local del, ins, sub = prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost
      local m = del
      if ins < m then m = ins end
      if sub < m then m = sub end
      cur[j] = m
    end
    prev, cur = cur, prev
  end
  return prev[lb]
end
options.distance = levenshtein

-- `candidates` is a list of strings or a table whose string keys are the
-- candidates (so a spec table can be passed as is).
function options.suggest(word, candidates)
  if type(word) ~= "string" or type(candidates) ~= "table" then return nil end
  local limit = math.max(2, compat.idiv(#word, 3))
  local best, best_d
  for k, v in pairs(candidates) do
    local name
    if compat.is_integer(k) and type(v) == "string" then
      name = v
    elseif type(k) == "string" then
      name = k
    end
    if name then
      local d = levenshtein(word, name)
      -- ties go to the alphabetically first name so results are stable
      if d <= limit and (best_d == nil or d < best_d or (d == best_d and name < best)) then
        best, best_d = name, d
      end
    end
  end
  return best
end

-- " (did you mean \"x\"?)" for the nearest candidate, or "".
function options.did_you_mean(word, candidates)
  local near = options.suggest(word, candidates)
  return near and string.format(" (did you mean %q?)", near) or ""
end

local function article(kind)
  return (kind:match("^[aeiou]") and "an " or "a ") .. kind
end

local function got(value, kind)
  -- a number failing "integer" is more useful shown by value
  if kind == "integer" and type(value) == "number" then return tostring(value) end
  return type(value)
end

local function is_kind(value, kind)
  if kind == "integer" then
    return compat.is_integer(value)
      or (type(value) == "number" and value == math.floor(value)
          and value == value and value ~= math.huge and value ~= -math.huge)
  elseif kind == "callable" then
    if type(value) == "function" then return true end
    local mt = getmetatable(value)
    return type(mt) == "table" and mt.__call ~= nil
  end
  return type(value) == kind
end

-- true, or nil + "must be ..., got ..." (no prefix: callers add it)
local function check_kind(value, kind)
  local tk = type(kind)
  if tk == "string" then
    if is_kind(value, kind) then return true end
    return nil, "must be " .. article(kind) .. ", got " .. got(value, kind)
  elseif tk == "table" then
    for _, k in ipairs(kind) do
      if type(k) == "function" then
        if k(value) then return true end
      elseif is_kind(value, k) then
        return true
      end
    end
    local names = {}
    for _, k in ipairs(kind) do
      if type(k) == "string" then names[#names + 1] = article(k) end
    end
    local expect = #names > 0 and table.concat(names, " or ") or "valid"
    return nil, "must be " .. expect .. ", got " .. type(value)
  elseif tk == "function" then
    local ok, msg = kind(value)
    if ok then return true end
    return nil, msg or "is invalid"
  end
  error("options: bad kind in spec: " .. tostring(kind), 3)
end
options.check_kind = check_kind

local function quote(k)
  if type(k) == "string" then return string.format("%q", k) end
  return tostring(k)
end

-- `return options.check(...)` is a tail call that removes the public
-- function's frame; without this the error would point one frame too far.
local function tail_adjust(level, name)
  if level > 1 and compat.is_tail_call(2, name) then return level - 1 end
  return level
end

-- Checks every key of `tbl` against `spec`. Raises at `level` (default 3:
-- the caller of the public function that called check). Returns `tbl`, or a
-- fresh empty table when `tbl` is nil.
function options.check(where, tbl, spec, level)
  level = tail_adjust(level or 3, "check")
  if tbl == nil then return {} end
  if type(tbl) ~= "table" then
    error(string.format("%s: options must be a table, got %s", where, type(tbl)), level)
  end
  -- sorted keys so the first reported problem is deterministic
  local keys = {}
  for k in pairs(tbl) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "string" or ta == "number" then return a < b end
    return tostring(a) < tostring(b)
  end)
  for _, k in ipairs(keys) do
    local kind = type(k) == "string" and spec[k] or nil
    if kind == nil then
      local hint = options.suggest(k, spec)
      error(string.format("%s: unknown option %s%s", where, quote(k),
        hint and string.format(" (did you mean %q?)", hint) or ""), level)
    end
    local ok, msg = check_kind(tbl[k], kind)
    if not ok then
      error(string.format("%s: option %q %s", where, k, msg), level)
    end
  end
  return tbl
end

-- Checks a positional argument; returns it.
function options.arg(where, name, value, kind, level)
  local ok, msg = check_kind(value, kind)
  if not ok then
    error(string.format("%s: argument %q %s", where, name, msg), tail_adjust(level or 3, "arg"))
  end
  return value
end

local function num_desc(v)
  return type(v) == "number" and tostring(v) or type(v)
end

-- Seconds and sizes are finite numbers: NaN compares false with everything
-- and math.huge never elapses, so either would turn a bound into none.
local function finite(v)
  return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge
end

function options.positive(v)
  if finite(v) and v > 0 then return true end
  return nil, "must be a positive number, got " .. num_desc(v)
end

function options.non_negative(v)
  if finite(v) and v >= 0 then return true end
  return nil, "must be a non-negative number, got " .. num_desc(v)
end

-- A kind for counts: an integer >= min.
function options.at_least(min)
  return function(v)
    if is_kind(v, "integer") and v >= min then return true end
    return nil, string.format("must be an integer >= %d, got %s", min, num_desc(v))
  end
end

-- Ids and names (thread, agent, task and tool ids, metadata keys) are text:
-- valid UTF-8 without NUL bytes. The C core keeps them as C strings, where a
-- NUL would cut "victim\0x" down to another thread's "victim".
-- Text the C core reads as a C string (a prompt, a URL): no NUL byte.
function options.no_nul(v)
  if type(v) ~= "string" then return nil, "must be a string, got " .. type(v) end
  local nul = v:find("\0", 1, true)
  if nul then return nil, string.format("must not contain a NUL byte (found at byte %d)", nul) end
  return true
end

function options.text_id(v)
  local fine, why = options.no_nul(v)
  if not fine then return nil, why end
  local ok, bad = compat.utf8_len(v)
  if not ok then return nil, string.format("must be valid UTF-8 (invalid byte at %d)", bad) end
  return true
end

return options
