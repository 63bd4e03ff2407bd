local schema = require "luagent.schema"

-- a stand-in for the codec's null so the tests do not need the C core
local NULL = setmetatable({}, { __name = "null" })
local OPTS = { null = NULL }

local function arr(t)
  return setmetatable(t or {}, { __jsontype = "array" })
end

local function obj(t)
  return setmetatable(t or {}, { __jsontype = "object" })
end

local function ok(s, v)
  local res, err = schema.validate(s, v, OPTS)
  assert(res == true, "expected valid, got: " .. tostring(err))
end

-- asserts failure and that the message contains every given fragment
local function bad(s, v, ...)
  local res, err = schema.validate(s, v, OPTS)
  assert(res == nil, "expected invalid")
  assert.is_string(err)
  for _, frag in ipairs({ ... }) do
    assert(err:find(frag, 1, true), ("message %q lacks %q"):format(err, frag))
  end
  return err
end

local function check_fails(s, ...)
  local res, err = schema.check(s)
  assert(res == nil, "expected schema to be rejected")
  for _, frag in ipairs({ ... }) do
    assert(err:find(frag, 1, true), ("message %q lacks %q"):format(err, frag))
  end
  return err
end

describe("schema.is_array / describe_type", function()
  it("recognises arrays", function()
    assert.is_true(schema.is_array({ 1, 2 }))
    assert.is_true(schema.is_array(arr()))
    assert.is_false(schema.is_array({}))
    assert.is_false(schema.is_array({ 1, x = 2 }))
    assert.is_false(schema.is_array({ [2] = 1 }))
    assert.is_false(schema.is_array(obj()))
  end)

  it("names values", function()
    assert.equal("string", schema.describe_type("x"))
    assert.equal("integer", schema.describe_type(2))
    assert.equal("integer", schema.describe_type(2.0))
    assert.equal("number", schema.describe_type(2.5))
    assert.equal("boolean", schema.describe_type(false))
    assert.equal("null", schema.describe_type(NULL, NULL))
    assert.equal("object", schema.describe_type({ a = 1 }))
    assert.equal("array", schema.describe_type({ 1 }))
    assert.equal("array", schema.describe_type(arr()))
    assert.equal("function", schema.describe_type(print))
  end)
end)

describe("schema.validate types", function()
  it("distinguishes integer from number", function()
    local s = { type = "integer" }
    ok(s, 2)
    ok(s, 2.0)
    bad(s, 2.5, "$: expected integer, got 2.5")
    bad(s, math.huge, "expected integer")
    bad(s, "2", "expected integer, got string")
    ok({ type = "number" }, 2.5)
    ok({ type = "number" }, 2)
    bad({ type = "number" }, 0 / 0, "expected number, got NaN")
    bad({ type = "number" }, -math.huge, "got -Infinity")
  end)

  it("checks strings, booleans and null", function()
    ok({ type = "string" }, "x")
    bad({ type = "string" }, 1, "$: expected string, got number")
    ok({ type = "boolean" }, false)
    bad({ type = "boolean" }, "true", "expected boolean, got string")
    ok({ type = "null" }, NULL)
    bad({ type = "null" }, false, "expected null, got boolean")
    bad({ type = "string" }, NULL, "expected string, got null")
    ok({ type = { "string", "null" } }, NULL)
    bad({ type = { "string", "null" } }, 3, "expected string or null, got number")
  end)

  it("treats an empty plain table as both object and array", function()
    ok({ type = "object" }, {})
    ok({ type = "array" }, {})
    ok({ type = "object", properties = { a = { type = "string" } } }, {})
    ok({ type = "array", items = { type = "string" } }, {})
  end)

  it("does not take a decoded array for an object", function()
    bad({ type = "object" }, arr(), "expected object, got array")
    bad({ type = "object" }, { 1, 2 }, "expected object, got array")
    ok({ type = "array" }, arr())
    bad({ type = "array" }, obj(), "expected array, got object")
    bad({ type = "array" }, { a = 1 }, "expected array, got object")
  end)

  it("rejects values JSON cannot carry", function()
    bad({ type = "string" }, print, "$: expected string, got function")
    bad({}, print, "expected a JSON value, got function")
    bad({ type = "object", properties = { f = {} } }, { f = coroutine.create(print) }, "$.f: expected a JSON value, got thread")
    bad({ type = "null" }, io.stdout, "expected null, got userdata")
  end)

  it("accepts anything JSON with an empty schema", function()
    for _, v in ipairs({ 1, "x", true, NULL, {}, { 1 }, { a = 1 } }) do ok({}, v) end
  end)

  it("honours nullable", function()
    ok({ type = "string", nullable = true }, NULL)
    bad({ type = "string" }, NULL, "expected string")
  end)

  it("supports boolean sub-schemas", function()
    ok({ properties = { a = true } }, { a = 1 })
    bad({ properties = { a = false } }, { a = 1 }, "$.a: no value is allowed here")
  end)
end)

describe("schema.validate keywords", function()
  it("enum compares deeply", function()
    local s = { enum = { "all", "any" } }
    ok(s, "all")
    bad(s, "sometimes", '$: "sometimes" is not one of "all", "any"')
    ok({ enum = { 2 } }, 2.0)
    ok({ enum = { { a = { 1, 2 } }, NULL } }, { a = { 1, 2 } })
    ok({ enum = { { a = { 1, 2 } }, NULL } }, NULL)
    bad({ enum = { { a = { 1, 2 } } } }, { a = { 1, 3 } }, "is not one of")
    bad({ enum = { 1, true, NULL } }, false, "false is not one of 1, true, null")
  end)

  it("const compares deeply", function()
    ok({ const = 2 }, 2.0)
    ok({ const = { x = { 1 } } }, { x = arr({ 1 }) })
    bad({ const = "a" }, "b", '$: expected "a", got "b"')
    bad({ const = { x = 1 } }, { x = 1, y = 2 }, 'expected {"x":1}, got {"x":1,"y":2}')
    bad({ enum = { { 1, 2 } } }, { 1 }, "[1] is not one of [1,2]")
  end)

  it("checks numeric bounds", function()
    ok({ minimum = 1 }, 1)
    bad({ minimum = 1 }, 0, "$: must be >= 1, got 0")
    bad({ maximum = 10 }, 11, "must be <= 10, got 11")
    bad({ exclusiveMinimum = 1 }, 1, "must be > 1, got 1")
    ok({ exclusiveMinimum = 1 }, 1.5)
    bad({ exclusiveMaximum = 5 }, 5, "must be < 5, got 5")
    bad({ minimum = 1, exclusiveMinimum = true }, 1, "must be > 1") -- draft 4
    bad({ maximum = 1, exclusiveMaximum = true }, 1, "must be < 1")
    ok({ multipleOf = 5 }, 10)
    ok({ multipleOf = 0.1 }, 0.3)
    bad({ multipleOf = 5 }, 7, "must be a multiple of 5, got 7")
    ok({ minimum = 5 }, "not a number") -- keywords only apply to their type
  end)

  it("counts string length in code points", function()
    ok({ minLength = 2, maxLength = 2 }, "éé")
    bad({ maxLength = 1 }, "éé", "must be at most 1 character long, got 2")
    bad({ minLength = 3 }, "ab", "must be at least 3 characters long, got 2")
    bad({ maxLength = 1 }, "\xff\xfe", "got 2") -- invalid UTF-8: bytes
    ok({ pattern = "^[0-9]+$", format = "email" }, "not enforced")
    ok({ minLength = 5 }, 3)
  end)

  it("checks required and properties", function()
    local s = {
      type = "object",
      properties = { prompt = { type = "string" }, limit = { type = "integer" } },
      required = { "prompt" },
    }
    ok(s, { prompt = "hi" })
    ok(s, { prompt = "hi", extra = 1 })
    bad(s, {}, '$: missing required property "prompt"')
    bad(s, { prompt = "x", limit = 2.5 }, "$.limit: expected integer, got 2.5")
    ok({ required = { "a" } }, { a = NULL }) -- null counts as present
  end)

  it("checks additionalProperties false", function()
    local s = { type = "object", properties = { a = {} }, additionalProperties = false }
    ok(s, { a = 1 })
    bad(s, { a = 1, verbose = true }, '$: unexpected property "verbose" (additionalProperties is false)')
  end)

  it("checks additionalProperties as a schema", function()
    local s = { type = "object", properties = { a = { type = "string" } }, additionalProperties = { type = "integer" } }
    ok(s, { a = "x", b = 1, c = 2 })
    bad(s, { a = "x", b = "y" }, "$.b: expected integer, got string")
  end)

  it("checks property counts", function()
    bad({ minProperties = 2 }, { a = 1 }, "must have at least 2 properties, got 1")
    bad({ maxProperties = 1 }, { a = 1, b = 2 }, "must have at most 1 property, got 2")
  end)

  it("checks items, sizes and uniqueness", function()
    local s = { type = "array", items = { type = "string" }, minItems = 1, maxItems = 3, uniqueItems = true }
    ok(s, { "a", "b" })
    ok(s, arr({ "a" }))
    bad(s, { "a", "b", 3 }, "$[2]: expected string, got number")
    bad(s, {}, "must have at least 1 item, got 0")
    bad(s, { "a", "b", "c", "d" }, "must have at most 3 items, got 4")
    bad(s, { "a", "b", "a" }, "items must be unique, but [0] and [2] are equal")
    bad({ uniqueItems = true }, { { x = 1 }, { x = 1.0 } }, "[0] and [1] are equal")
    ok({ uniqueItems = true }, { { x = 1 }, { x = 2 } })
  end)

  it("supports tuple items", function()
    local s = { type = "array", items = { { type = "string" }, { type = "integer" } } }
    ok(s, { "a", 1 })
    ok(s, { "a" })
    ok(s, { "a", 1, true })
    bad(s, { 1, "a" }, "$[0]: expected string, got number", "$[1]: expected integer, got string")
  end)

  it("builds paths through nested objects and arrays", function()
    local s = {
      type = "object",
      properties = {
        items = {
          type = "array",
          items = {
            type = "object",
            properties = { tags = { type = "array", items = { type = "string" } }, ["odd key"] = { type = "string" } },
            required = { "tags" },
          },
        },
      },
    }
    ok(s, { items = { { tags = { "a" } }, { tags = {} } } })
    bad(s, { items = { { tags = { "a" } }, { tags = { "b", 5 } } } }, "$.items[1].tags[1]: expected string, got number")
    bad(s, { items = { { tags = {} }, {} } }, '$.items[1]: missing required property "tags"')
    bad(s, { items = { { tags = {}, ["odd key"] = 1 } } }, '$.items[0]["odd key"]: expected string')
  end)
end)

describe("schema.validate combinators", function()
  it("anyOf passes when one passes", function()
    local s = { anyOf = { { type = "string" }, { type = "integer" } } }
    ok(s, "x")
    ok(s, 1)
    bad(s, true, "$: expected string or integer, got boolean")
  end)

  it("anyOf reports the errors of the only plausible alternative", function()
    local s = { anyOf = { { type = "string" }, { type = "object", required = { "id" } } } }
    bad(s, { name = "x" }, '$: missing required property "id"')
    local s2 = { anyOf = { { minimum = 10 }, { maximum = 0 } } }
    bad(s2, 5, "does not match any alternative of anyOf", "alternative 0: $: must be >= 10", "alternative 1")
  end)

  it("oneOf needs exactly one", function()
    local s = { oneOf = { { type = "integer" }, { type = "number" } } }
    ok(s, 2.5)
    bad(s, 2, "matches more than one alternative of oneOf (0 and 1)")
    bad(s, "x", "expected integer or number, got string")
  end)

  it("allOf needs all", function()
    local s = { allOf = { { type = "integer" }, { minimum = 3 }, { maximum = 5 } } }
    ok(s, 4)
    bad(s, 6, "must be <= 5, got 6")
  end)

  it("not inverts", function()
    local s = { ["not"] = { type = "string" } }
    ok(s, 1)
    bad(s, "x", 'must not match the schema in "not"')
  end)
end)

describe("schema $ref", function()
  it("resolves $defs and definitions", function()
    local s = {
      type = "object",
      properties = { a = { ["$ref"] = "#/$defs/Name" }, b = { ["$ref"] = "#/definitions/Num" } },
      ["$defs"] = { Name = { type = "string" } },
      definitions = { Num = { type = "number" } },
    }
    assert.is_true(schema.check(s))
    ok(s, { a = "x", b = 1 })
    bad(s, { a = 1, b = "y" }, "$.a: expected string, got number", "$.b: expected number, got string")
  end)

  it("validates a recursive tree three levels deep", function()
    local s = {
      ["$ref"] = "#/$defs/Node",
      ["$defs"] = {
        Node = {
          type = "object",
          properties = {
            value = { type = "integer" },
            children = { type = "array", items = { ["$ref"] = "#/$defs/Node" } },
          },
          required = { "value" },
          additionalProperties = false,
        },
      },
    }
    assert.is_true(schema.check(s))
    local tree = { value = 1, children = { { value = 2, children = { { value = 3 }, { value = 4, children = {} } } } } }
    ok(s, tree)
    tree.children[1].children[2].value = "four"
    tree.children[1].children[1].colour = "red"
    bad(s, tree, "$.children[0].children[1].value: expected integer, got string",
      '$.children[0].children[0]: unexpected property "colour"')
  end)

  it("supports a ref to the root", function()
    local s = { type = "object", properties = { next = { ["$ref"] = "#" }, v = { type = "string" } } }
    assert.is_true(schema.check(s))
    ok(s, { v = "a", next = { v = "b", next = { v = "c" } } })
    bad(s, { next = { next = { v = 1 } } }, "$.next.next.v: expected string")
  end)

  it("stops on refs that loop without consuming input", function()
    local s = { allOf = { { ["$ref"] = "#" } } }
    bad(s, 1, "nesting too deep")
  end)
end)

describe("schema.validate error collection", function()
  it("joins up to five errors", function()
    local props, v = {}, {}
    for i = 1, 8 do
      props["p" .. i] = { type = "string" }
      v["p" .. i] = i
    end
    local err = bad({ type = "object", properties = props }, v)
    local n = select(2, err:gsub("expected string", ""))
    assert.equal(5, n)
    assert.equal(5, select(2, err:gsub("; %$", "")) + 1)
    assert.matches("more errors not shown", err)
    local _, err3 = schema.validate({ type = "object", properties = props }, v, { null = NULL, max_errors = 3 })
    assert.equal(3, select(2, err3:gsub("expected string", "")))
  end)

  it("lists several different problems", function()
    local s = {
      type = "object",
      properties = { limit = { type = "integer" }, mode = { enum = { "all", "any" } } },
      required = { "prompt" },
    }
    bad(s, { limit = 2.5, mode = "x" }, 'missing required property "prompt"; ', "$.limit: expected integer, got 2.5; ",
      '$.mode: "x" is not one of "all", "any"')
  end)
end)

describe("schema.check", function()
  it("accepts a typical tool schema", function()
    assert.is_true(schema.check({
      type = "object",
      description = "args",
      ["$schema"] = "https://json-schema.org/draft/2020-12/schema",
      properties = {
        q = { type = "string", minLength = 1, maxLength = 100, pattern = "^a", format = "uri", title = "Q" },
        n = { type = { "integer", "null" }, minimum = 0, maximum = 10, multipleOf = 1, default = 5 },
        tags = { type = "array", items = { type = "string" }, minItems = 0, maxItems = 4, uniqueItems = true },
        mode = { enum = { "a", "b" }, examples = { "a" }, deprecated = false },
        c = { const = 1, readOnly = true, writeOnly = false, nullable = true, ["$comment"] = "x" },
        alt = { anyOf = { { type = "string" }, true }, oneOf = { {} }, allOf = { {} }, ["not"] = { type = "null" } },
        t = { items = { { type = "string" }, { type = "number" } } },
        m = { additionalProperties = { type = "string" }, minProperties = 1, maxProperties = 2 },
        x = { exclusiveMinimum = 0, exclusiveMaximum = 1 },
      },
      required = { "q", "undeclared" },
      additionalProperties = true,
    }))
  end)

  it("rejects non-tables", function()
    check_fails("object", "input_schema: a schema must be a table, got string")
    check_fails(nil, "got nil")
    check_fails({ properties = { a = "string" } }, "input_schema.properties.a: a schema must be a table, got string")
  end)

  it("uses the given root name", function()
    local _, err = schema.check({ type = "int" }, "tools.search.input_schema")
    assert.matches("^tools%.search%.input_schema%.type: ", err)
  end)

  it("rejects unknown type names", function()
    check_fails({ type = "object", properties = { limit = { type = "int" } } },
      'input_schema.properties.limit.type: unknown type "int" (expected one of string, number, integer, boolean, object, array, null)')
    check_fails({ type = { "string", "float" } }, 'unknown type "float"')
    check_fails({ type = 3 }, "input_schema.type: must be a type name")
  end)

  it("rejects unknown keywords with a suggestion", function()
    check_fails({ type = "object", propertes = {} }, 'input_schema: unknown schema keyword "propertes" (did you mean "properties"?)')
    local err = check_fails({ zzzzqqqq = 1 }, 'unknown schema keyword "zzzzqqqq"')
    assert.not_matches("did you mean", err)
    check_fails({ properties = { a = { tpye = "string" } } }, 'input_schema.properties.a: unknown schema keyword "tpye" (did you mean "type"?)')
    check_fails({ "string" }, "input_schema: unexpected key [1]")
  end)

  it("rejects a bad required", function()
    check_fails({ required = "a" }, "input_schema.required: must be a list of property names, got string")
    check_fails({ required = { a = true } }, "input_schema.required: must be a list")
    check_fails({ required = { 1 } }, "input_schema.required[0]: must be a string, got number")
    check_fails({ properties = { a = {} }, required = { "a", "x" }, additionalProperties = false },
      'input_schema.required: "x" is not in properties')
    assert.is_true(schema.check({ properties = { a = {} }, required = { "x" } }))
    assert.is_true(schema.check({ required = {} }))
  end)

  it("rejects empty or non-list enum", function()
    check_fails({ enum = {} }, "input_schema.enum: must be a non-empty list")
    check_fails({ enum = "a" }, "input_schema.enum: must be a non-empty list")
  end)

  it("rejects bad keyword values", function()
    check_fails({ items = "string" }, "input_schema.items: a schema must be a table, got string")
    check_fails({ items = { { type = "string" }, 3 } }, "input_schema.items[1]: a schema must be a table")
    check_fails({ additionalProperties = "no" }, "input_schema.additionalProperties: a schema must be a table")
    check_fails({ anyOf = {} }, "input_schema.anyOf: must be a non-empty list of schemas")
    check_fails({ oneOf = { { type = "x" } } }, 'input_schema.oneOf[0].type: unknown type "x"')
    check_fails({ allOf = { a = {} } }, "input_schema.allOf: must be a non-empty list")
    check_fails({ ["not"] = 1 }, "input_schema.not: a schema must be a table")
    check_fails({ minimum = "1" }, "input_schema.minimum: must be a number, got string")
    check_fails({ maxLength = -1 }, "input_schema.maxLength: must be a non-negative integer, got -1")
    check_fails({ minItems = 1.5 }, "input_schema.minItems: must be a non-negative integer, got 1.5")
    check_fails({ multipleOf = 0 }, "input_schema.multipleOf: must be greater than 0")
    check_fails({ pattern = 1 }, "input_schema.pattern: must be a string, got number")
    check_fails({ uniqueItems = "yes" }, "input_schema.uniqueItems: must be a boolean")
    check_fails({ properties = { 1 } }, "input_schema.properties: must be a table of name -> schema")
  end)

  it("rejects bad $refs", function()
    check_fails({ ["$ref"] = "#/$defs/Missing" }, 'input_schema.$ref: cannot resolve "#/$defs/Missing"')
    check_fails({ properties = { a = { ["$ref"] = "#/definitions/X" } } }, 'input_schema.properties.a.$ref: cannot resolve')
    check_fails({ ["$ref"] = "http://example.com/s.json" }, "only local references")
    check_fails({ ["$ref"] = 5 }, "input_schema.$ref: must be a string")
    check_fails({ ["$defs"] = { A = { type = "strng" } } }, 'input_schema.$defs.A.type: unknown type "strng"')
  end)

  it("terminates on recursive schemas", function()
    local tree = {
      ["$defs"] = { Node = { properties = { kids = { items = { ["$ref"] = "#/$defs/Node" } } } } },
      ["$ref"] = "#/$defs/Node",
    }
    assert.is_true(schema.check(tree))
    check_fails({ ["$defs"] = { A = { ["$ref"] = "#/$defs/B" }, B = { ["$ref"] = "#/$defs/A" } } }, "circular $ref")
    check_fails({ ["$ref"] = "#" }, "circular $ref")
    local cyclic = { type = "object", properties = {} }
    cyclic.properties.self = cyclic -- a Lua-level cycle
    assert.is_true(schema.check(cyclic))
  end)

  -- validate answers from a check compiled once per schema table and walks
  -- the value again only to word the errors: both must agree on validity
  it("gives the same verdict on the second and later calls, nested and cyclic schemas included", function()
    local node = { type = "object", properties = { n = { type = "integer", minimum = 0 } } }
    node.properties.next = node -- a Lua-level cycle
    local s = {
      type = "object",
      properties = {
        tags = { type = "array", items = { type = "string", maxLength = 3 } },
        pair = { items = { { type = "integer" }, { enum = { "a", "b" } } } },
        any = { anyOf = { { type = "string" }, { type = "object", required = { "x" } } } },
        maybe = { type = "string", nullable = true },
        list = node,
      },
      additionalProperties = { type = "boolean" },
      required = { "tags" },
    }
    for _ = 1, 2 do
      ok(s, obj{ tags = arr{ "ab" }, pair = arr{ 1, "b" }, any = obj{ x = 1 }, maybe = NULL, flag = true,
        list = obj{ n = 1, next = obj{ n = 2 } } })
      bad(s, obj{ tags = arr{ "abcd" } }, "$.tags[0]", "at most 3")
      bad(s, obj{ tags = arr{}, pair = arr{ 1, "c" } }, "$.pair[1]")
      bad(s, obj{ tags = arr{}, any = obj{ y = 1 } }, "missing required property")
      bad(s, obj{ tags = arr{}, flag = 1 }, "$.flag", "expected boolean")
      bad(s, obj{ tags = arr{}, list = obj{ next = obj{ n = -1 } } }, "$.list.next.n", "must be >= 0")
      bad(s, obj{}, "missing required property \"tags\"")
    end
    local err = bad({ type = "object", additionalProperties = false }, obj{ a = 1 }, "unexpected property")
    assert.equal(err, select(2, schema.validate({ type = "object", additionalProperties = false }, obj{ a = 1 }, OPTS)))
  end)
end)
