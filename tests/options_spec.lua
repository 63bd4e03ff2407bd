local options = require "luagent.options"

-- stands in for a public library function that checks its options
local function public_fn(opts)
  return options.check("app:wait", opts, {
    timeout_s = options.positive,
    name = "string",
    count = "integer",
    body = { "string", "table" },
    on_done = "function",
    retries = options.non_negative,
  })
end

local function public_arg(name)
  options.arg("app:enqueue_tool", "name", name, "string")
  return name
end

-- the same, but with a non-tail call
local function public_fn_plain(opts)
  local t = options.check("app:wait", opts, { name = "string" })
  return t
end

-- calls f from a Lua frame (not straight from pcall) so error levels have a
-- position to point at
local function err_of(f, ...)
  local ok, err = pcall(function(...) f(...) end, ...)
  assert.is_false(ok)
  return err
end

describe("options.suggest", function()
  it("finds the nearest candidate", function()
    assert.equal("timeout_s", options.suggest("timout_s", { "timeout_s", "name", "body" }))
    assert.equal("properties", options.suggest("propertes", { "properties", "required", "type" }))
  end)

  it("accepts a table keyed by candidate names", function()
    assert.equal("timeout_s", options.suggest("timeout", { timeout_s = "number", name = "string" }))
  end)

  it("returns nil when nothing is close", function()
    assert.is_nil(options.suggest("zzzzzz", { "timeout_s", "name" }))
    assert.is_nil(options.suggest("x", {}))
  end)

  it("allows distance max(2, #word // 3)", function()
    -- 12 letters: up to 4 edits
    assert.equal("abcdefghijkl", options.suggest("abcdefghWXYZ", { "abcdefghijkl" }))
    assert.is_nil(options.suggest("abcdefgVWXYZ", { "abcdefghijkl" }))
    -- short words still get 2 edits
    assert.equal("ab", options.suggest("xy", { "ab" }))
  end)

  it("breaks ties alphabetically", function()
    for _ = 1, 5 do
      assert.equal("bat", options.suggest("cat", { "rat", "mat", "bat" }))
      assert.equal("bat", options.suggest("cat", { rat = 1, mat = 1, bat = 1 }))
    end
  end)
end)

describe("options.check", function()
  it("returns the table, or an empty one for nil", function()
    local t = { name = "x" }
    assert.equal(t, public_fn(t))
    assert.same({}, public_fn(nil))
  end)

  it("rejects non-tables", function()
    assert.matches("app:wait: options must be a table, got number", err_of(public_fn, 5), 1, true)
  end)

  it("rejects unknown options with a suggestion", function()
    local err = err_of(public_fn, { timout_s = 1 })
    assert.matches('app:wait: unknown option "timout_s" (did you mean "timeout_s"?)', err, 1, true)
  end)

  it("rejects unknown options without a suggestion when nothing is close", function()
    local err = err_of(public_fn, { frobnicate = 1 })
    assert.matches('app:wait: unknown option "frobnicate"$', err)
    assert.not_matches("did you mean", err)
  end)

  it("rejects non-string keys", function()
    assert.matches("unknown option 1", err_of(public_fn, { "x" }), 1, true)
  end)

  it("rejects wrong types", function()
    assert.matches('app:wait: option "name" must be a string, got number', err_of(public_fn, { name = 1 }), 1, true)
    assert.matches('option "on_done" must be a function, got string', err_of(public_fn, { on_done = "f" }), 1, true)
  end)

  it("accepts integral floats as integers", function()
    assert.has_no.errors(function() public_fn({ count = 3 }) end)
    assert.has_no.errors(function() public_fn({ count = 3.0 }) end)
    assert.matches('option "count" must be an integer, got 2.5', err_of(public_fn, { count = 2.5 }), 1, true)
    assert.matches('option "count" must be an integer, got string', err_of(public_fn, { count = "3" }), 1, true)
  end)

  it("accepts alternatives", function()
    assert.has_no.errors(function() public_fn({ body = "s" }) end)
    assert.has_no.errors(function() public_fn({ body = {} }) end)
    assert.matches('option "body" must be a string or a table, got boolean', err_of(public_fn, { body = true }), 1, true)
  end)

  it("runs custom checkers", function()
    assert.has_no.errors(function() public_fn({ timeout_s = 0.5, retries = 0 }) end)
    assert.matches('option "timeout_s" must be a positive number, got 0', err_of(public_fn, { timeout_s = 0 }), 1, true)
    assert.matches('option "timeout_s" must be a positive number, got string', err_of(public_fn, { timeout_s = "1" }), 1, true)
    assert.matches('option "retries" must be a non-negative number, got -1', err_of(public_fn, { retries = -1 }), 1, true)
    local err = err_of(options.check, "w", { x = 1 }, { x = function(v) return v == 2, "must be two" end }, 1)
    assert.matches('w: option "x" must be two', err, 1, true)
  end)

  it("points the error at the caller of the public function", function()
    assert.matches("^[^:]*options_spec%.lua:%d+: app:wait: unknown option", err_of(public_fn, { timout_s = 1 }))
    assert.matches("^[^:]*options_spec%.lua:%d+: app:wait: option", err_of(public_fn, { name = 1 }))
    assert.matches("^[^:]*options_spec%.lua:%d+: app:wait: options must", err_of(public_fn, 1))
  end)

  it("reports the exact line of the user's call", function()
    local line = debug.getinfo(1, "l").currentline + 1
    local ok, err = pcall(function() public_fn({ timout_s = 1 }) end)
    assert.is_false(ok)
    assert.matches("options_spec%.lua:" .. line .. ":", err)
  end)

  it("points at the caller with or without a tail call", function()
    local line = debug.getinfo(1, "l").currentline + 1
    local ok1, e1 = pcall(function() public_fn({ nme = 1 }) end)
    local ok2, e2 = pcall(function() public_fn_plain({ nme = 1 }) end)
    assert.is_false(ok1)
    assert.is_false(ok2)
    assert.matches("options_spec%.lua:" .. line .. ": app:wait: unknown option \"nme\"", e1)
    assert.matches("options_spec%.lua:" .. (line + 1) .. ": app:wait: unknown option \"nme\"", e2)
  end)

  it("honours an explicit level", function()
    local function inner(opts) options.check("x", opts, {}, 4) end
    local function outer(opts) inner(opts) end
    assert.matches("^[^:]*options_spec%.lua:%d+: x: unknown option", err_of(outer, { a = 1 }))
  end)
end)

describe("options.arg", function()
  it("returns valid arguments", function()
    assert.equal("n", public_arg("n"))
  end)

  it("raises at the caller with the argument name", function()
    local err = err_of(public_arg, nil)
    assert.matches('^[^:]*options_spec%.lua:%d+: app:enqueue_tool: argument "name" must be a string, got nil$', err)
  end)

  it("accepts alternatives and custom checkers", function()
    assert.equal(2, options.arg("f", "n", 2, options.positive))
    assert.matches('f: argument "n" must be a positive number, got -2',
      err_of(options.arg, "f", "n", -2, options.positive), 1, true)
    assert.equal(print, options.arg("f", "cb", print, { "function", "table" }))
  end)
end)

describe("options.positive / non_negative", function()
  it("check numbers", function()
    assert.is_true(options.positive(1))
    assert.is_nil(options.positive(0))
    assert.is_nil(options.positive(0 / 0))
    assert.is_true(options.non_negative(0))
    local ok, msg = options.non_negative(-0.5)
    assert.is_nil(ok)
    assert.matches("^must be", msg)
  end)
end)
