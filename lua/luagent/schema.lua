-- A JSON Schema subset for tool arguments: `check` vets a schema when a tool
-- is defined, `validate` checks the arguments a model sent and explains what
-- is wrong in words the model can act on.
--
-- Supported: type, properties, required, additionalProperties, enum, const,
-- items (schema or tuple list), minItems, maxItems, uniqueItems, minimum,
-- maximum, exclusiveMinimum, exclusiveMaximum (number, or draft-4 boolean),
-- multipleOf, minLength, maxLength (UTF-8 code points), minProperties,
-- maxProperties, anyOf, oneOf, allOf, not, local $ref into $defs/definitions
-- (any "#/..." JSON pointer into the root schema), boolean sub-schemas, and
-- OpenAPI `nullable: true`. `pattern` and `format` are accepted but NOT
-- enforced: Lua patterns are not ECMA regexes. $ref siblings apply too
-- (2019-09+ semantics). Annotations are ignored.
local options = require "luagent.options"

local compat = require("luagent.compat")
local schema = {}

local MAX_ERRORS = 5
local MAX_DEPTH = 200 -- guards against $ref cycles that consume no input

-- JSON null ---------------------------------------------------------------

local core_null, core_tried
local function default_null()
  if core_null == nil then
    -- try the loader once; afterwards only look at what others loaded
    local core = package.loaded["luagent.core"]
    if core == nil and not core_tried then
      core_tried = true
      local ok, mod = pcall(require, "luagent.core")
      if ok then core = mod end
    end
    if type(core) == "table" and type(core.json) == "table" then core_null = core.json.null end
  end
  return core_null
end

-- Returns a predicate for "is JSON null". Without a known sentinel, a light
-- userdata holding NULL is the codec's convention, recognised by its address.
local function null_test(null)
  if null == nil then null = default_null() end
  if null ~= nil then
    return function(v) return rawequal(v, null) end
  end
  return function(v)
    if type(v) ~= "userdata" or getmetatable(v) ~= nil then return false end
    local s = tostring(v)
    return s:find("^userdata: %(nil%)$") ~= nil or s:find("^userdata: 0x0+$") ~= nil
      or s:find("^userdata: 0+$") ~= nil
  end
end

-- Arrays and objects ------------------------------------------------------

local function json_mark(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__jsontype") or nil
end

-- Decoded arrays are marked; plain Lua sequences count too. A plain empty
-- table is NOT an array here (see is_json_array).
local function is_array(v)
  if type(v) ~= "table" then return false end
  local mark = json_mark(v)
  if mark then return mark == "array" end
  local n = #v
  if n == 0 then return false end
  local count = 0
  for k in pairs(v) do
    if not compat.is_integer(k) or k < 1 or k > n then return false end
    count = count + 1
  end
  return count == n
end
schema.is_array = is_array

-- A plain empty table is ambiguous in Lua: it is both [] and {}.
local function is_empty_plain(v)
  return next(v) == nil and json_mark(v) == nil
end

local function is_json_array(v)
  return type(v) == "table" and (is_array(v) or is_empty_plain(v))
end

local function is_json_object(v)
  return type(v) == "table" and not is_array(v)
end

local function is_finite(n)
  return n == n and n ~= math.huge and n ~= -math.huge
end

local function is_integral(n)
  return type(n) == "number" and (compat.is_integer(n) or (is_finite(n) and n == math.floor(n)))
end

-- The JSON-ish name of a Lua value.
function schema.describe_type(v, null)
  if v ~= nil and null_test(null)(v) then return "null" end
  local t = type(v)
  if t == "number" then return is_integral(v) and "integer" or "number" end
  if t == "table" then return is_array(v) and "array" or "object" end
  return t
end

local type_tests = {
  null = function(v, ctx) return ctx.is_null(v) end,
  boolean = function(v) return type(v) == "boolean" end,
  string = function(v) return type(v) == "string" end,
  number = function(v) return type(v) == "number" and is_finite(v) end,
  integer = function(v) return type(v) == "number" and is_finite(v) and is_integral(v) end,
  object = is_json_object,
  array = is_json_array,
}
local TYPE_NAMES = "string, number, integer, boolean, object, array, null"

-- Rendering ---------------------------------------------------------------

local function fmt_number(n)
  if n ~= n then return "NaN" end
  if n == math.huge then return "Infinity" end
  if n == -math.huge then return "-Infinity" end
  return tostring(n)
end

local escapes = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
local function quote(s)
  if #s > 60 then s = s:sub(1, 57) .. "..." end
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

-- Short JSON-like text of a value for messages; long output is cut.
local function render(v, ctx, depth)
  local t = type(v)
  if t == "string" then return quote(v) end
  if t == "number" then return fmt_number(v) end
  if t == "boolean" then return tostring(v) end
  if ctx.is_null(v) then return "null" end
  if t ~= "table" then return t end
  depth = (depth or 0) + 1
  if depth > 3 then return is_array(v) and "[...]" or "{...}" end
  local parts = {}
  if is_array(v) then
    for i = 1, #v do parts[i] = render(v[i], ctx, depth) end
  else
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for i, k in ipairs(keys) do parts[i] = quote(tostring(k)) .. ":" .. render(v[k], ctx, depth) end
  end
  local open, close = "{", "}"
  if is_array(v) then open, close = "[", "]" end
  local out = open .. table.concat(parts, ",") .. close
  if #out > 80 then out = out:sub(1, 76) .. "..." .. close end
  return out
end

-- Paths use JSON-style 0-based array indexes: the model thinks in JSON.
local function key_path(path, k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return path .. "." .. k end
  if type(k) == "string" then return path .. "[" .. quote(k) .. "]" end
  return path .. "[" .. tostring(k) .. "]"
end

local function index_path(path, i)
  return path .. "[" .. (i - 1) .. "]"
end

-- Helpers -----------------------------------------------------------------

local sorted_cache = setmetatable({}, { __mode = "k" })

local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "string" or ta == "number" then return a < b end
  return tostring(a) < tostring(b)
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, key_less)
  return keys
end

-- schema tables do not change while in use, so their key order is cached
local function schema_keys(t)
  local keys = sorted_cache[t]
  if not keys then
    keys = sorted_keys(t)
    sorted_cache[t] = keys
  end
  return keys
end

local function deep_equal(a, b)
  if a == b then return true end -- also 2 == 2.0
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  local ma, mb = json_mark(a), json_mark(b)
  if ma and mb and ma ~= mb then return false end
  for k, va in pairs(a) do
    if not deep_equal(va, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end
schema.deep_equal = deep_equal

-- Resolves a local JSON pointer ("#", "#/$defs/Name", ...) against the root.
local function resolve(root, ref)
  if ref == "#" then return root end
  local ptr = type(ref) == "string" and ref:match("^#(/.*)$")
  if not ptr then return nil end
  local cur = root
  for seg in ptr:gmatch("/([^/]*)") do
    seg = seg:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
    seg = seg:gsub("~1", "/"):gsub("~0", "~")
    if type(cur) ~= "table" then return nil end
    local nxt = cur[seg]
    if nxt == nil and seg:match("^%d+$") then nxt = cur[tonumber(seg) + 1] end
    cur = nxt
  end
  return cur
end

local function count_keys(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

local function plural(n, word)
  if n == 1 then return n .. " " .. word end
  return n .. " " .. (word == "property" and "properties" or word .. "s")
end

-- Validation --------------------------------------------------------------

local function add_raw(ctx, e)
  if #ctx.errors >= ctx.max then
    ctx.more = true
    return
  end
  ctx.errors[#ctx.errors + 1] = e
end

local function add_error(ctx, path, msg)
  add_raw(ctx, path .. ": " .. msg)
end

local function sub_ctx(ctx, max)
  return { errors = {}, max = max or ctx.max, is_null = ctx.is_null, root = ctx.root }
end

local validate_node

local function type_list(t)
  return type(t) == "string" and { t } or t
end

local function type_matches(t, v, ctx)
  for _, name in ipairs(type_list(t)) do
    local test = type_tests[name]
    if test and test(v, ctx) then return true end
  end
  return false
end

local function describe(v, ctx)
  if ctx.is_null(v) then return "null" end
  if type(v) == "table" then return is_array(v) and "array" or "object" end
  return type(v)
end

local function mismatch(expected, v, ctx)
  local numeric = false
  for _, name in ipairs(expected) do
    if name == "number" or name == "integer" then numeric = true end
  end
  -- for numeric expectations the value itself says what is wrong (2.5, NaN)
  local got = (numeric and type(v) == "number") and fmt_number(v) or describe(v, ctx)
  return "expected " .. table.concat(expected, " or ") .. ", got " .. got
end

-- The type a branch demands, following $refs, or nil when unconstrained.
local function branch_type(sub, ctx)
  for _ = 1, 16 do
    if type(sub) ~= "table" then return nil end
    if sub.type ~= nil then return sub.type end
    if sub["$ref"] == nil then return nil end
    sub = resolve(ctx.root, sub["$ref"])
  end
  return nil
end

-- Reports why no alternative of anyOf/oneOf matched.
local function report_alternatives(kw, list, fails, v, path, ctx)
  local compatible, types = {}, {}
  for i, sub in ipairs(list) do
    local t = branch_type(sub, ctx)
    if t == nil or type_matches(t, v, ctx) then
      compatible[#compatible + 1] = i
    else
      for _, name in ipairs(type_list(t)) do types[#types + 1] = name end
    end
  end
  if #compatible == 0 then
    add_error(ctx, path, mismatch(types, v, ctx))
  elseif #compatible == 1 then
    -- one plausible alternative: its own errors are the useful ones
    local c = fails[compatible[1]]
    for _, e in ipairs(c.errors) do add_raw(ctx, e) end
    if c.more then ctx.more = true end
  else
    local parts = {}
    for _, i in ipairs(compatible) do
      parts[#parts + 1] = "alternative " .. (i - 1) .. ": " .. fails[i].errors[1]
    end
    add_error(ctx, path, "does not match any alternative of " .. kw .. " (" .. table.concat(parts, "; ") .. ")")
  end
end

local function run_alternatives(list, v, path, ctx, depth)
  local passed, fails = {}, {}
  for i, sub in ipairs(list) do
    local c = sub_ctx(ctx)
    validate_node(sub, v, path, c, depth + 1)
    if #c.errors == 0 then passed[#passed + 1] = i else fails[i] = c end
  end
  return passed, fails
end

-- Keyword checkers: (keyword value, schema, value, path, ctx, depth). Each
-- returns early when the value is not of the type the keyword is about.
local keywords = {}

keywords["$ref"] = function(ref, _, v, path, ctx, depth)
  local target = resolve(ctx.root, ref)
  if target == nil then
    add_error(ctx, path, "schema error: cannot resolve $ref " .. quote(tostring(ref)))
    return
  end
  validate_node(target, v, path, ctx, depth + 1)
end

keywords.enum = function(list, _, v, path, ctx)
  for _, e in ipairs(list) do
    if deep_equal(v, e) then return end
  end
  local shown = {}
  for i, e in ipairs(list) do
    if i > 20 then shown[#shown + 1] = "..." break end
    shown[#shown + 1] = render(e, ctx)
  end
  add_error(ctx, path, render(v, ctx) .. " is not one of " .. table.concat(shown, ", "))
end

keywords.const = function(c, _, v, path, ctx)
  if not deep_equal(v, c) then
    add_error(ctx, path, "expected " .. render(c, ctx) .. ", got " .. render(v, ctx))
  end
end

keywords.minimum = function(m, s, v, path, ctx)
  if type(v) ~= "number" then return end
  if s.exclusiveMinimum == true then -- draft 4
    if not (v > m) then add_error(ctx, path, "must be > " .. fmt_number(m) .. ", got " .. fmt_number(v)) end
  elseif not (v >= m) then
    add_error(ctx, path, "must be >= " .. fmt_number(m) .. ", got " .. fmt_number(v))
  end
end

keywords.maximum = function(m, s, v, path, ctx)
  if type(v) ~= "number" then return end
  if s.exclusiveMaximum == true then
    if not (v < m) then add_error(ctx, path, "must be < " .. fmt_number(m) .. ", got " .. fmt_number(v)) end
  elseif not (v <= m) then
    add_error(ctx, path, "must be <= " .. fmt_number(m) .. ", got " .. fmt_number(v))
  end
end

keywords.exclusiveMinimum = function(m, _, v, path, ctx)
  if type(v) ~= "number" or type(m) ~= "number" then return end
  if not (v > m) then add_error(ctx, path, "must be > " .. fmt_number(m) .. ", got " .. fmt_number(v)) end
end

keywords.exclusiveMaximum = function(m, _, v, path, ctx)
  if type(v) ~= "number" or type(m) ~= "number" then return end
  if not (v < m) then add_error(ctx, path, "must be < " .. fmt_number(m) .. ", got " .. fmt_number(v)) end
end

keywords.multipleOf = function(m, _, v, path, ctx)
  if type(v) ~= "number" or m <= 0 then return end
  local q = v / m
  -- tolerance: 0.3 / 0.1 is 2.9999999999999996 in binary floating point
  if not is_finite(q) or math.abs(q - math.floor(q + 0.5)) > 1e-9 * math.max(1, math.abs(q)) then
    add_error(ctx, path, "must be a multiple of " .. fmt_number(m) .. ", got " .. fmt_number(v))
  end
end

local function str_len(v)
  return compat.utf8_len(v) or #v
end

keywords.minLength = function(n, _, v, path, ctx)
  if type(v) ~= "string" then return end
  local len = str_len(v)
  if len < n then
    add_error(ctx, path, "must be at least " .. plural(n, "character") .. " long, got " .. len)
  end
end

keywords.maxLength = function(n, _, v, path, ctx)
  if type(v) ~= "string" then return end
  local len = str_len(v)
  if len > n then
    add_error(ctx, path, "must be at most " .. plural(n, "character") .. " long, got " .. len)
  end
end

keywords.required = function(list, _, v, path, ctx)
  if not is_json_object(v) then return end
  for _, name in ipairs(list) do
    if v[name] == nil then add_error(ctx, path, "missing required property " .. quote(name)) end
  end
end

keywords.properties = function(props, _, v, path, ctx, depth)
  if not is_json_object(v) then return end
  for _, name in ipairs(schema_keys(props)) do
    local pv = v[name]
    if pv ~= nil then validate_node(props[name], pv, key_path(path, name), ctx, depth + 1) end
  end
end

keywords.additionalProperties = function(extra, s, v, path, ctx, depth)
  if extra == true or not is_json_object(v) then return end
  local props = type(s.properties) == "table" and s.properties or {}
  for _, k in ipairs(sorted_keys(v)) do
    if props[k] == nil then
      if extra == false then
        add_error(ctx, path, "unexpected property " .. (type(k) == "string" and quote(k) or tostring(k))
          .. " (additionalProperties is false)")
      else
        validate_node(extra, v[k], key_path(path, k), ctx, depth + 1)
      end
    end
  end
end

keywords.minProperties = function(n, _, v, path, ctx)
  if not is_json_object(v) then return end
  local c = count_keys(v)
  if c < n then add_error(ctx, path, "must have at least " .. plural(n, "property") .. ", got " .. c) end
end

keywords.maxProperties = function(n, _, v, path, ctx)
  if not is_json_object(v) then return end
  local c = count_keys(v)
  if c > n then add_error(ctx, path, "must have at most " .. plural(n, "property") .. ", got " .. c) end
end

keywords.items = function(items, _, v, path, ctx, depth)
  if not is_json_array(v) then return end
  if is_array(items) then -- tuple form: one schema per position
    for i, sub in ipairs(items) do
      if v[i] == nil then break end
      validate_node(sub, v[i], index_path(path, i), ctx, depth + 1)
    end
  else
    for i = 1, #v do
      validate_node(items, v[i], index_path(path, i), ctx, depth + 1)
    end
  end
end

keywords.minItems = function(n, _, v, path, ctx)
  if not is_json_array(v) then return end
  if #v < n then add_error(ctx, path, "must have at least " .. plural(n, "item") .. ", got " .. #v) end
end

keywords.maxItems = function(n, _, v, path, ctx)
  if not is_json_array(v) then return end
  if #v > n then add_error(ctx, path, "must have at most " .. plural(n, "item") .. ", got " .. #v) end
end

keywords.uniqueItems = function(on, _, v, path, ctx)
  if on ~= true or not is_json_array(v) then return end
  for i = 1, #v do
    for j = i + 1, #v do
      if deep_equal(v[i], v[j]) then
        add_error(ctx, path, "items must be unique, but [" .. (i - 1) .. "] and [" .. (j - 1) .. "] are equal")
        return
      end
    end
  end
end

keywords.allOf = function(list, _, v, path, ctx, depth)
  for _, sub in ipairs(list) do validate_node(sub, v, path, ctx, depth + 1) end
end

keywords.anyOf = function(list, _, v, path, ctx, depth)
  local passed, fails = run_alternatives(list, v, path, ctx, depth)
  if #passed == 0 then report_alternatives("anyOf", list, fails, v, path, ctx) end
end

keywords.oneOf = function(list, _, v, path, ctx, depth)
  local passed, fails = run_alternatives(list, v, path, ctx, depth)
  if #passed == 0 then
    report_alternatives("oneOf", list, fails, v, path, ctx)
  elseif #passed > 1 then
    add_error(ctx, path, "matches more than one alternative of oneOf (" .. (passed[1] - 1) .. " and "
      .. (passed[2] - 1) .. "); it must match exactly one")
  end
end

keywords["not"] = function(sub, _, v, path, ctx, depth)
  local c = sub_ctx(ctx, 1)
  validate_node(sub, v, path, c, depth + 1)
  if #c.errors == 0 then add_error(ctx, path, 'must not match the schema in "not"') end
end

-- Fixed order keeps messages deterministic: required before property errors.
local ORDER = {
  "$ref", "enum", "const",
  "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
  "minLength", "maxLength",
  "required", "properties", "additionalProperties", "minProperties", "maxProperties",
  "minItems", "maxItems", "uniqueItems", "items",
  "allOf", "anyOf", "oneOf", "not",
}

local JSON_LUA_TYPES = { string = true, number = true, boolean = true, table = true }

function validate_node(s, v, path, ctx, depth)
  if s == true or s == nil then return end
  if s == false then
    add_error(ctx, path, "no value is allowed here")
    return
  end
  if depth > MAX_DEPTH then
    add_error(ctx, path, "schema error: nesting too deep (recursive $ref?)")
    return
  end
  if s.nullable == true and ctx.is_null(v) then return end
  if s.type ~= nil then
    if not type_matches(s.type, v, ctx) then
      add_error(ctx, path, mismatch(type_list(s.type), v, ctx))
      return -- other keywords would only add noise
    end
  elseif not JSON_LUA_TYPES[type(v)] and not ctx.is_null(v) then
    add_error(ctx, path, "expected a JSON value, got " .. type(v))
    return
  end
  for _, kw in ipairs(ORDER) do
    local kv = s[kw]
    if kv ~= nil then keywords[kw](kv, s, v, path, ctx, depth) end
  end
end

-- Compiled checks -----------------------------------------------------------
--
-- Arguments are checked on every tool call, nearly always valid. A schema is
-- compiled once (per table: schema tables do not change while in use) into a
-- check that only answers valid or not: the keywords the node has, in ORDER,
-- children compiled the same way, no paths built. Only an invalid value is
-- walked again by validate_node, which words the errors. The structural
-- keywords are compiled; every other keyword runs its own checker above on a
-- scratch context, so both walks agree on what is valid.

local compiled_cache = setmetatable({}, { __mode = "k" })
local compile

local function accept() return true end
local function reject() return false end

local function compile_type(t)
  local tests = {}
  for _, name in ipairs(type_list(t)) do
    if type_tests[name] then tests[#tests + 1] = type_tests[name] end
  end
  if #tests == 1 then return tests[1] end
  return function(v, ctx)
    for i = 1, #tests do
      if tests[i](v, ctx) then return true end
    end
    return false
  end
end

local function compile_properties(props)
  local names, checks = {}, {}
  for _, name in ipairs(schema_keys(props)) do
    names[#names + 1] = name
    checks[#checks + 1] = compile(props[name])
  end
  return function(v, ctx, depth)
    if not is_json_object(v) then return true end
    for i = 1, #names do
      local pv = v[names[i]]
      if pv ~= nil and not checks[i](pv, ctx, depth + 1) then return false end
    end
    return true
  end
end

local function compile_additional(extra, s)
  if extra == true then return accept end
  local props = type(s.properties) == "table" and s.properties or {}
  local check = extra ~= false and compile(extra) or nil
  return function(v, ctx, depth)
    if not is_json_object(v) then return true end
    for k, pv in pairs(v) do
      if props[k] == nil and (not check or not check(pv, ctx, depth + 1)) then return false end
    end
    return true
  end
end

local function compile_items(items)
  if is_array(items) then -- tuple form
    local checks = {}
    for i, sub in ipairs(items) do checks[i] = compile(sub) end
    return function(v, ctx, depth)
      if not is_json_array(v) then return true end
      for i = 1, #checks do
        if v[i] == nil then break end
        if not checks[i](v[i], ctx, depth + 1) then return false end
      end
      return true
    end
  end
  local check = compile(items)
  return function(v, ctx, depth)
    if not is_json_array(v) then return true end
    for i = 1, #v do
      if not check(v[i], ctx, depth + 1) then return false end
    end
    return true
  end
end

-- A keyword compiled as its own checker: it fails by adding an error.
local function keyword_step(kw, kv, s)
  local run = keywords[kw]
  return function(v, ctx, depth)
    run(kv, s, v, "$", ctx, depth)
    return #ctx.errors == 0
  end
end

local function compile_node(s)
  local nullable = s.nullable == true
  local type_ok = s.type ~= nil and compile_type(s.type) or nil
  local steps = {}
  for _, kw in ipairs(ORDER) do
    local kv = s[kw]
    if kv ~= nil then
      if kw == "properties" and type(kv) == "table" then
        steps[#steps + 1] = compile_properties(kv)
      elseif kw == "additionalProperties" then
        steps[#steps + 1] = compile_additional(kv, s)
      elseif kw == "items" and type(kv) == "table" then
        steps[#steps + 1] = compile_items(kv)
      else
        steps[#steps + 1] = keyword_step(kw, kv, s)
      end
    end
  end
  local n = #steps
  return function(v, ctx, depth)
    if depth > MAX_DEPTH then return false end
    if nullable and ctx.is_null(v) then return true end
    if type_ok then
      if not type_ok(v, ctx) then return false end
    elseif not JSON_LUA_TYPES[type(v)] and not ctx.is_null(v) then
      return false
    end
    for i = 1, n do
      if not steps[i](v, ctx, depth) then return false end
    end
    return true
  end
end

function compile(s)
  if s == true or s == nil then return accept end
  if s == false then return reject end
  if type(s) ~= "table" then
    return function(v, ctx, depth) -- what validate_node makes of it
      validate_node(s, v, "$", ctx, depth)
      return #ctx.errors == 0
    end
  end
  local c = compiled_cache[s]
  if c then return c end
  -- a table may contain itself: its children call it through this stub
  local real
  compiled_cache[s] = function(v, ctx, depth) return real(v, ctx, depth) end
  real = compile_node(s)
  compiled_cache[s] = real
  return real
end

local last_null, last_null_test
local function cached_null_test(null)
  if null == nil then null = default_null() end
  if null == nil then return null_test(nil) end
  if not rawequal(null, last_null) then last_null, last_null_test = null, null_test(null) end
  return last_null_test
end

-- validate(s, value, opts) -> true | nil, message. opts.null: the JSON null
-- sentinel (default: luagent.core's); opts.max_errors (default 5).
-- The compiled check's context: it stops at its first error, so its list is
-- empty again whenever the check passes and it can be reused.
local scratch = { errors = {}, max = 1 }

function schema.validate(s, value, opts)
  opts = opts or {}
  local is_null = cached_null_test(opts.null)
  if scratch.errors[1] then scratch.errors = {} end -- left by a check that raised
  scratch.is_null, scratch.root = is_null, s
  local valid = compile(s)(value, scratch, 0)
  scratch.root = nil
  if valid then return true end
  scratch.errors, scratch.more = {}, nil
  local ctx = {
    errors = {},
    max = opts.max_errors or MAX_ERRORS,
    is_null = is_null,
    root = s,
  }
  validate_node(s, value, "$", ctx, 0)
  if #ctx.errors == 0 then return true end
  local msg = table.concat(ctx.errors, "; ")
  if ctx.more then msg = msg .. "; (more errors not shown)" end
  return nil, msg
end

-- Schema checking ---------------------------------------------------------

local check_node

local function check_list_of_schemas(list, here, c)
  if not is_array(list) then
    return nil, here .. ": must be a non-empty list of schemas, got " .. (type(list) == "table" and "an empty or non-list table" or type(list))
  end
  for i, sub in ipairs(list) do
    local ok, err = check_node(sub, index_path(here, i), c)
    if not ok then return nil, err end
  end
  return true
end

local function check_schema_map(map, here, c)
  if type(map) ~= "table" or is_array(map) then
    return nil, here .. ": must be a table of name -> schema, got " .. (type(map) == "table" and "a list" or type(map))
  end
  for _, k in ipairs(sorted_keys(map)) do
    if type(k) ~= "string" then return nil, here .. ": names must be strings, got " .. type(k) end
    local ok, err = check_node(map[k], key_path(here, k), c)
    if not ok then return nil, err end
  end
  return true
end

local function check_number(v, here)
  if type(v) ~= "number" or not is_finite(v) then
    return nil, here .. ": must be a number, got " .. (type(v) == "number" and fmt_number(v) or type(v))
  end
  return true
end

local function check_count(v, here)
  if not is_integral(v) or v < 0 then
    return nil, here .. ": must be a non-negative integer, got " .. (type(v) == "number" and fmt_number(v) or type(v))
  end
  return true
end

local function check_kind(kind)
  return function(v, here)
    if type(v) ~= kind then return nil, here .. ": must be a " .. kind .. ", got " .. type(v) end
    return true
  end
end

local function allow() return true end

local checks = {
  type = function(t, here)
    local list = type(t) == "string" and { t } or (is_array(t) and t)
    if not list then
      return nil, here .. ": must be a type name or a non-empty list of type names, got " .. type(t)
    end
    for _, name in ipairs(list) do
      if type(name) ~= "string" or not type_tests[name] then
        local shown = type(name) == "string" and quote(name) or type(name)
        return nil, here .. ": unknown type " .. shown .. " (expected one of " .. TYPE_NAMES .. ")"
      end
    end
    return true
  end,
  properties = check_schema_map,
  ["$defs"] = check_schema_map,
  definitions = check_schema_map,
  required = function(list, here, _, s)
    if type(list) ~= "table" or not (is_array(list) or next(list) == nil) then
      return nil, here .. ": must be a list of property names, got " .. (type(list) == "table" and "an object" or type(list))
    end
    for i, name in ipairs(list) do
      if type(name) ~= "string" then
        return nil, index_path(here, i) .. ": must be a string, got " .. type(name)
      end
      -- with additionalProperties false an unlisted required key can never be sent
      if s.additionalProperties == false
        and (type(s.properties) ~= "table" or s.properties[name] == nil) then
        return nil, here .. ": " .. quote(name) .. " is not in properties (additionalProperties is false)"
      end
    end
    return true
  end,
  enum = function(list, here)
    if not is_array(list) then return nil, here .. ": must be a non-empty list" end
    return true
  end,
  items = function(items, here, c)
    if is_array(items) then return check_list_of_schemas(items, here, c) end
    return check_node(items, here, c)
  end,
  additionalProperties = function(v, here, c)
    return check_node(v, here, c) -- booleans are schemas too
  end,
  anyOf = check_list_of_schemas,
  oneOf = check_list_of_schemas,
  allOf = check_list_of_schemas,
  ["not"] = function(v, here, c) return check_node(v, here, c) end,
  minimum = check_number,
  maximum = check_number,
  exclusiveMinimum = function(v, here)
    if type(v) == "boolean" then return true end -- draft 4
    return check_number(v, here)
  end,
  exclusiveMaximum = function(v, here)
    if type(v) == "boolean" then return true end
    return check_number(v, here)
  end,
  multipleOf = function(v, here)
    local ok, err = check_number(v, here)
    if not ok then return nil, err end
    if v <= 0 then return nil, here .. ": must be greater than 0, got " .. fmt_number(v) end
    return true
  end,
  minLength = check_count, maxLength = check_count,
  minItems = check_count, maxItems = check_count,
  minProperties = check_count, maxProperties = check_count,
  pattern = check_kind("string"), -- accepted, not enforced
  format = check_kind("string"), -- accepted, not enforced
  uniqueItems = check_kind("boolean"),
  const = allow,
  ["$ref"] = function(ref, here, c, s)
    if type(ref) ~= "string" then return nil, here .. ": must be a string, got " .. type(ref) end
    if ref:sub(1, 1) ~= "#" then
      return nil, here .. ": only local references like \"#/$defs/Name\" are supported, got " .. quote(ref)
    end
    local target = resolve(c.root, ref)
    if target == nil then return nil, here .. ": cannot resolve " .. quote(ref) end
    -- a chain of $refs that returns to itself would recurse without consuming input
    local seen, cur = { [s] = true }, target
    while type(cur) == "table" and type(cur["$ref"]) == "string" do
      if seen[cur] then return nil, here .. ": circular $ref " .. quote(ref) end
      seen[cur] = true
      cur = resolve(c.root, cur["$ref"])
    end
    return check_node(target, here .. "->" .. ref, c)
  end,
}
for _, k in ipairs({ "description", "title", "default", "examples", "$schema", "$id", "$comment",
  "deprecated", "readOnly", "writeOnly", "nullable" }) do
  checks[k] = allow
end

function check_node(s, here, c)
  if type(s) == "boolean" then return true end
  if type(s) ~= "table" then return nil, here .. ": a schema must be a table, got " .. type(s) end
  if c.seen[s] then return true end
  c.seen[s] = true
  for _, k in ipairs(sorted_keys(s)) do
    if type(k) ~= "string" then
      return nil, here .. ": unexpected key [" .. tostring(k) .. "] (a schema is a table of keywords)"
    end
    local f = checks[k]
    if f == nil then
      local hint = options.suggest(k, checks)
      return nil, here .. ": unknown schema keyword " .. quote(k)
        .. (hint and " (did you mean " .. quote(hint) .. "?)" or "")
    end
    local ok, err = f(s[k], here .. "." .. k, c, s)
    if not ok then return nil, err end
  end
  return true
end

-- check(s, name) -> true | nil, message. `name` prefixes the paths in
-- messages (default "input_schema").
function schema.check(s, name)
  name = name or "input_schema"
  if type(s) ~= "table" then return nil, name .. ": a schema must be a table, got " .. type(s) end
  return check_node(s, name, { root = s, seen = {} })
end

return schema
