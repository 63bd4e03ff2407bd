-- Apps whose model is luagent.openai{} pointed at the fake OpenAI server
-- (tests/support/fake_openai.lua), for the tests/openai_*_spec.lua files.
-- Nothing here sleeps to synchronise: waits go through the app (app:wait
-- with a short bound, which returns as soon as the app has news) and
-- through events and the server's request log.
local luagent = require "luagent"
local core = require "luagent.core"
local cjson = require "cjson"

local H = { luagent = luagent, json = luagent.json, core = core, cjson = cjson }

-- A Lua literal for plain data (strings, numbers, booleans, tables).
local function literal(v)
  local t = type(v)
  if t == "string" then return string.format("%q", v) end
  if t == "number" or t == "boolean" or t == "nil" then return tostring(v) end
  assert(t == "table", "literal: cannot write a " .. t)
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do
    local key = type(k) == "string" and string.format("[%q]", k) or ("[" .. tostring(k) .. "]")
    parts[#parts + 1] = key .. " = " .. literal(v[k])
  end
  return "{ " .. table.concat(parts, ", ") .. " }"
end
H.literal = literal

-- The source of luagent.openai{...} against srv with test defaults; opts
-- override them (false removes a default).
function H.model_src(srv, opts)
  local o = {
    model = "m", base_url = srv.url, api_key = "sk-test-key", stream = false,
    max_retries = 0, retry_backoff_s = 0.01, timeout_s = 10,
  }
  for k, v in pairs(opts or {}) do
    if v == false and k ~= "stream" then o[k] = nil else o[k] = v end
  end
  return "luagent.openai" .. literal(o)
end

-- An app from a script body that sees `luagent`, `MODEL` (the openai model
-- above) and `S` (test-side values, host state only; {} in workers). The
-- body must `return luagent.config{...}`.
function H.app(srv, model_opts, body, S)
  _G.__fake_openai_S = S or {}
  local src = "local luagent = require 'luagent'\n" ..
    "local S = _G.__fake_openai_S or {}\n" ..
    "local MODEL = " .. H.model_src(srv, model_opts) .. "\n" .. body
  local ok, app = pcall(luagent.load_string, src, "=openai_spec_cfg")
  _G.__fake_openai_S = nil
  if not ok then error(app, 2) end
  return app
end

-- The common case: one agent `a` with `tools_src` (a Lua list expression).
function H.simple(srv, model_opts, extra)
  extra = extra or {}
  return H.app(srv, model_opts, (extra.pre or "") .. [[
    return luagent.config{
      model = MODEL,
      background_tasks = { enabled = true },
      agents = { luagent.agent{ id = "a", instructions = "Be brief.", tools = ]] ..
      (extra.tools or "{}") .. [[ } },
    } ]], extra.S)
end

local E = require "support.events"

-- Every event of the app so far, and those of a kind.
H.events = E.all

function H.of_kind(events, kind)
  return E.of_kind(events, kind)
end

-- Wait (through the app) until pred(event) holds for some event; returns
-- it, or nil after timeout_s.
function H.wait_event(app, pred, timeout_s, ids)
  local deadline = core.now() + (timeout_s or 5)
  local since = 0
  while true do
    for _, ev in ipairs(app:events{ since = since, limit = 100000 }) do
      since = ev.seq
      if pred(ev) then return ev end
    end
    if core.now() >= deadline then return nil end
    if ids then
      app:wait(ids, { timeout_s = 0.02 })
    else
      app:run_until_idle{ timeout_s = 0.02 }
    end
  end
end

-- Poll the app's stats (no pumping) until pred(stats) holds.
function H.wait_stats(app, pred, timeout_s)
  local deadline = core.now() + (timeout_s or 5)
  while core.now() < deadline do
    local s = app:stats()
    if pred(s) then return s end
  end
  return nil
end

function H.now() return core.now() end

-- Every place a secret could surface for an app: events (all kinds),
-- records, and what the caller adds. Returns one JSON text to search.
function H.everything(app, extra)
  local parts = {}
  for _, ev in ipairs(H.events(app)) do parts[#parts + 1] = H.json.encode(ev) end
  for _, rec in ipairs(app:list{ limit = 100000 }) do
    parts[#parts + 1] = H.json.encode(rec)
    parts[#parts + 1] = H.json.encode(app:get(rec.task_id))
  end
  for _, x in ipairs(extra or {}) do
    parts[#parts + 1] = type(x) == "string" and x or H.json.encode(x)
  end
  return table.concat(parts, "\n")
end

return H
