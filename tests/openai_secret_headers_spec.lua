-- Secrets in headers are redacted like the API key: the values of
-- Authorization, api-key, x-api-key, Proxy-Authorization and of any header
-- named in luagent.openai{ secret_headers = {...} } reach the provider and
-- nowhere else -- not errors, events, records, saved threads, logs or the
-- store file -- also when the server echoes the request headers back.
local fake = require "support.fake_openai_client"
local H = require "support.fake_openai_app"
local luagent = H.luagent

local AUTH_TOKEN = "tok-AUTHSECRET-7d1e9a3c5b"
local SECRETS = {
  authorization = "Bearer " .. AUTH_TOKEN,
  ["api-key"] = "AZSECRET-41c2f0e8d7b6",
  ["x-api-key"] = "XKSECRET-9a8b7c6d5e4f",
  ["proxy-authorization"] = "Basic UFJPWFlTRUNSRVQtdXNlcjpwYXNz",
  ["x-org-token"] = "ORGSECRET-0f1e2d3c4b5a",
}
-- What must never be found: each value and the bearer token alone.
local NEEDLES = { AUTH_TOKEN, "AUTHSECRET", "AZSECRET", "XKSECRET", "UFJPWFlTRUNSRVQ", "ORGSECRET" }

local function headers(with_org)
  local h = {
    Authorization = SECRETS.authorization,
    ["api-key"] = SECRETS["api-key"],
    ["X-Api-Key"] = SECRETS["x-api-key"],
    ["Proxy-Authorization"] = SECRETS["proxy-authorization"],
    ["X-Trace"] = "visible-trace-id",
  }
  if with_org then h["X-Org-Token"] = SECRETS["x-org-token"] end
  return h
end

local function assert_clean(text, where)
  for _, n in ipairs(NEEDLES) do
    assert.is_nil(text:find(n, 1, true), string.format("%s leaked into %s", n, where))
  end
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

describe("openai adapter: secret headers", function()
  local srv, dir
  setup(function()
    srv = fake.start()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -m 700 " .. dir))
  end)
  teardown(function()
    srv:stop()
    os.execute("rm -rf " .. dir)
  end)
  before_each(function() srv:reset() end)

  -- An app with a plain model (agent a) and a streaming one (agent s), both
  -- sending the secret headers; logs and error callbacks are captured.
  local function new_app(store_path, with_org)
    local opts = { api_key = false, headers = headers(with_org), max_retries = 1 }
    if with_org then opts.secret_headers = { "x-org-token" } end
    local stream_opts = {}
    for k, v in pairs(opts) do stream_opts[k] = v end
    stream_opts.stream = true
    local S = { logs = {} }
    luagent.set_log(function(level, msg) S.logs[#S.logs + 1] = level .. " " .. tostring(msg) end)
    local app = H.app(srv, opts, [[
      local echo = luagent.tool{ name = "echo", description = "Echo.",
        input_schema = { type = "object", properties = { text = { type = "string" } } },
        handler = function(args) return args.text end }
      return luagent.config{
        model = MODEL,
        store = { path = ]] .. string.format("%q", store_path) .. [[ },
        background_tasks = { enabled = true },
        agents = {
          luagent.agent{ id = "a", tools = { echo } },
          luagent.agent{ id = "s", model = ]] .. H.model_src(srv, stream_opts) .. [[, tools = { echo } },
        },
      } ]], S)
    app:on("error", function(e) S.logs[#S.logs + 1] = H.json.encode(e) end)
    return app, S
  end

  for _, with_org in ipairs({ false, true }) do
    local what = with_org and "standard and user-marked secret headers"
      or "Authorization, api-key, x-api-key and Proxy-Authorization"
    it("keeps " .. what .. " out of everything when the server echoes them", function()
      local path = string.format("%s/store-%s.db", dir, tostring(with_org))
      local app, S = new_app(path, with_org)
      local results = {}
      -- a chat turn that runs a tool, then the provider echoes the headers
      -- back in a retried 503 and a final 401
      srv:script{
        { tool_calls = { { id = "c1", name = "echo", arguments = { text = "one" } } } },
        { status = 503, echo_headers = true },
        { status = 401, echo_headers = true },
      }
      results[#results + 1] = app:chat("a", "hello", { thread_id = "t1" })
      assert.equal("failed", results[1].status)
      assert.equal(401, results[1].error.status)
      -- the echo happened: the server's words and the harmless header are kept
      assert.matches("request headers:", results[1].error.message, 1, true)
      assert.matches("visible-trace-id", results[1].error.message, 1, true)
      assert.matches("[redacted]", results[1].error.message, 1, true)
      assert.equal(1, #H.of_kind(H.events(app), "retry"))
      -- the server sent the token alone back
      srv:script{ { status = 400, body = { error = { message = "invalid token " .. AUTH_TOKEN } } } }
      results[#results + 1] = app:run("a", "x")
      assert.matches("invalid token [redacted]", results[#results].error.message, 1, true)
      -- a streamed run with an in-stream error that echoes them
      srv:script{ { text = "abc", after_chunks = 1, echo_headers = true,
        stream_error = { message = "upstream refused", type = "invalid_request_error" } } }
      results[#results + 1] = app:run("s", "x")
      assert.matches("upstream refused", results[#results].error.message, 1, true)
      -- a background run in a worker state
      srv:script{ { status = 500, echo_headers = true }, { status = 500, echo_headers = true } }
      local rec = app:enqueue_background("a", "x", { timeout_s = 10 })
      assert.is_true(app:wait({ rec.task_id }, { timeout_s = 10 }).done)
      local got = app:get(rec.task_id)
      assert.equal("failed", got.status)
      assert.matches("request headers:", got.error.message, 1, true)
      -- every header reached the server
      for _, r in ipairs(srv:requests()) do
        assert.equal(SECRETS.authorization, r.headers.authorization)
        assert.equal(SECRETS["x-api-key"], r.headers["x-api-key"])
        assert.equal(SECRETS["proxy-authorization"], r.headers["proxy-authorization"])
        if with_org then assert.equal(SECRETS["x-org-token"], r.headers["x-org-token"]) end
      end
      local everything = H.everything(app, { results, got, app:thread("a", "t1"), S.logs })
      assert_clean(everything, "events, records, results, the thread or the logs")
      app:close()
      luagent.set_log(nil)
      for _, suffix in ipairs({ "", "-wal", "-shm" }) do
        assert_clean(read_file(path .. suffix), "the store file " .. path .. suffix)
      end
      assert.is_true(#read_file(path) > 0)
    end)
  end

  it("keeps secret header values out of the model's plain data (what workers are sent)", function()
    local m = luagent.openai{ model = "m", base_url = srv.url, headers = headers(true),
      secret_headers = { "X-ORG-TOKEN" } }
    local plain = {}
    for k, v in pairs(m) do
      if type(v) ~= "function" then plain[k] = v end
    end
    local text = H.json.encode(plain)
    assert_clean(text, "the model's data")
    assert.matches("visible-trace-id", text, 1, true)
  end)

  it("refuses secret_headers that are not a list of names, and header values with CR or LF", function()
    for _, bad in ipairs({ "x-org-token", { name = "x" }, { 1 } }) do
      local ok, err = pcall(luagent.openai, { secret_headers = bad })
      assert.is_false(ok)
      assert.matches('luagent.openai: option "secret_headers" must be a list of header names', err, 1, true)
    end
    local ok, err = pcall(luagent.openai, { headers = { ["X-A"] = "v\r\nX-Injected: 1" } })
    assert.is_false(ok)
    assert.matches('luagent.openai: header "X-A" must not contain CR, LF or NUL bytes', err, 1, true)
  end)
end)
