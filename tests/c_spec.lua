-- The C-level tests, run through busted so they count in the summary.
describe("C tests", function()
  -- builds make target `bin` (with `env` before make) and runs it
  local function run_c_test(bin, env)
    local ok = os.execute((env or "") .. "make -s " .. bin .. " >/dev/null")
    assert.is_true(ok == true, "building " .. bin .. " failed")
    local p = io.popen("env -u LD_PRELOAD ./" .. bin .. " 2>&1; echo \"exit=$?\"")
    local out = p:read("a")
    p:close()
    assert.matches("exit=0", out, 1, true)
  end

  it("the SSE parser passes its unit tests (built with ASan+UBSan)", function()
    run_c_test("build/test_sse")
  end)

  it("the embedding API passes its tests against libluagent.a", function()
    -- a plain build, whatever the run: the compiler and the test need no
    -- preloaded sanitizer
    run_c_test("build/test_embed", "env -u LD_PRELOAD ")
  end)
end)
