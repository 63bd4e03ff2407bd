-- Token usage of model calls, its estimate when a provider reports none,
-- and its cost from the config's price table (README "Usage and cost").
local compat = require("luagent.compat")
local json = require("luagent.json")
local options = require("luagent.options")

local usage = {}

-- Bytes per token of the estimate: the usual rule of thumb for English
-- text and JSON with OpenAI's tokenizers.
usage.BYTES_PER_TOKEN = 4

local function int(v)
  return compat.tointeger(v) or (type(v) == "number" and v == v and math.floor(v)) or 0
end

local NONE = {}

-- A provider's usage as luagent keeps it, or nil when there is none.
-- Cached prompt tokens come as OpenAI's prompt_tokens_details.cached_tokens
-- or as cached_tokens.
function usage.normalize(u)
  if type(u) ~= "table" then return nil end
  local p, c = int(u.prompt_tokens), int(u.completion_tokens)
  local out = { prompt_tokens = p, completion_tokens = c,
    total_tokens = compat.tointeger(u.total_tokens) or (p + c) }
  local details = type(u.prompt_tokens_details) == "table" and u.prompt_tokens_details or NONE
  local cached = int(u.cached_tokens or details.cached_tokens)
  if cached > 0 then out.cached_tokens = math.min(cached, p) end
  return out
end

local function tokens_of(bytes)
  return compat.idiv(bytes + usage.BYTES_PER_TOKEN - 1, usage.BYTES_PER_TOKEN)
end

local function encoded_size(v)
  local ok, text = pcall(json.encode, v)
  return ok and #text or 0
end

-- The estimate for a call whose provider reported no usage: a token per
-- BYTES_PER_TOKEN bytes of what was sent (messages and tool specs as JSON)
-- and of what came back (text and tool calls).
function usage.estimate(request, reply)
  local sent = encoded_size(request.messages or {}) + encoded_size(request.tools or {})
  local got = #(reply.text or "")
  for _, c in ipairs(reply.tool_calls or {}) do
    got = got + #tostring(c.name or "") + (type(c.arguments) == "string" and #c.arguments
      or encoded_size(c.arguments or {}))
  end
  local p, c = tokens_of(sent), tokens_of(got)
  return { prompt_tokens = p, completion_tokens = c, total_tokens = p + c, estimated = true }
end

-- The cost of `u` for `model` from the price table (prices in currency
-- units per million tokens), or nil when the model has no price.
function usage.cost(pricing, model, u)
  local price = pricing and model and pricing[model]
  if not price then return nil end
  local cached = u.cached_tokens or 0
  local cached_price = price.cached_input_per_mtok or price.input_per_mtok
  return ((u.prompt_tokens - cached) * price.input_per_mtok + cached * cached_price +
    u.completion_tokens * price.output_per_mtok) / 1e6
end

-- Add b into a (both usage tables); returns a.
function usage.add(a, b)
  a.prompt_tokens = a.prompt_tokens + b.prompt_tokens
  a.completion_tokens = a.completion_tokens + b.completion_tokens
  a.total_tokens = a.total_tokens + b.total_tokens
  if b.cached_tokens then a.cached_tokens = (a.cached_tokens or 0) + b.cached_tokens end
  if b.cost then a.cost = (a.cost or 0) + b.cost end
  if b.estimated then a.estimated = true end
  return a
end

function usage.zero()
  return { prompt_tokens = 0, completion_tokens = 0, total_tokens = 0 }
end

local price_spec = {
  input_per_mtok = function(v) return options.non_negative(v) end,
  output_per_mtok = function(v) return options.non_negative(v) end,
  cached_input_per_mtok = function(v) return options.non_negative(v) end,
}

-- The config's `pricing` checked: { [model name] = { input_per_mtok,
-- output_per_mtok, cached_input_per_mtok? } }.
function usage.check_pricing(p)
  if p == nil then return nil end
  local out = {}
  for model, price in pairs(p) do
    local where = string.format("luagent.config pricing[%q]", tostring(model))
    if type(model) ~= "string" then error(where .. ": the key must be a model name", 0) end
    if type(price) ~= "table" then error(where .. " must be a table of prices per million tokens", 0) end
    options.check(where, price, price_spec, 4)
    if not price.input_per_mtok or not price.output_per_mtok then
      error(where .. ": input_per_mtok and output_per_mtok are required", 0)
    end
    out[model] = { input_per_mtok = price.input_per_mtok, output_per_mtok = price.output_per_mtok,
      cached_input_per_mtok = price.cached_input_per_mtok }
  end
  return out
end

-- "1.2k" style token counts and "$0.0123" style costs, for tables.
function usage.format_tokens(n)
  n = n or 0
  if n >= 1e6 then return string.format("%.1fM", n / 1e6) end
  if n >= 1e4 then return string.format("%.1fk", n / 1e3) end
  return tostring(compat.tointeger(n) or n)
end

function usage.format_cost(c)
  if not c then return "-" end
  if c == 0 then return "$0" end
  if c < 0.0001 then return "<$0.0001" end
  if c >= 1 then return string.format("$%.2f", c) end
  return string.format("$%.4f", c)
end

return usage
