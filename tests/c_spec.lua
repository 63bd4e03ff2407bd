-- The C-level tests, run through busted so they count in the summary.

-- Build `target` (outside any sanitizer preload) and run it; its output.
local function build_and_run(target)
  local ok = os.execute("env -u LD_PRELOAD make -s " .. target .. " >/dev/null")
  assert.is_true(ok == true or ok == 0, "building " .. target .. " failed")
  local p = io.popen("env -u LD_PRELOAD ./" .. target .. " 2>&1; echo \"exit=$?\"")
  local out = p:read("*a")
  p:close()
  return out
end

describe("C tests", function()
  it("the SSE parser passes its unit tests (built with ASan+UBSan)", function()
    assert.matches("exit=0", build_and_run("build/test_sse"), 1, true)
  end)

  -- A host that links the core statically must not meet our names: every
  -- global symbol of every object carries the lg_/luagent_/luaopen_ prefix.
  it("the core's objects define no global symbol without a luagent prefix", function()
    local ok = os.execute("env -u LD_PRELOAD make -s objects >/dev/null")
    assert.is_true(ok == true or ok == 0, "building the objects of build/obj/luagent failed")
    local p = io.popen("nm -g --defined-only build/obj/luagent/*.o")
    local out = p:read("*a")
    p:close()
    local bad, seen = {}, 0
    for line in out:gmatch("[^\n]+") do
      local kind, name = line:match("^%x+%s+(%a)%s+(%S+)$")
      if name then
        seen = seen + 1
        if not (name:match("^lg_") or name:match("^luagent_") or name:match("^luaopen_")) then
          bad[#bad + 1] = name .. " (" .. kind .. ")"
        end
      end
    end
    assert.is_true(seen > 20, "nm listed no symbols:\n" .. out)
    assert.are.same({}, bad)
  end)

  it("a C host calls the control tools' entries and gets not_found outside its scope", function()
    local out = build_and_run("build/test_control")
    assert.matches("control entries: ok", out, 1, true)
    assert.matches("exit=0", out, 1, true)
  end)

  it("the embedding API passes its tests against libluagent.a", function()
    assert.matches("exit=0", build_and_run("build/test_embed"), 1, true)
  end)
end)
