-- The C-level tests, run through busted so they count in the summary.
describe("C tests", function()
  it("the SSE parser passes its unit tests (built with ASan+UBSan)", function()
    local ok = os.execute("make -s build/test_sse >/dev/null")
    assert.is_true(ok == true, "building build/test_sse failed")
    local p = io.popen("env -u LD_PRELOAD ./build/test_sse 2>&1; echo \"exit=$?\"")
    local out = p:read("a")
    p:close()
    assert.matches("exit=0", out, 1, true)
  end)

  it("the embedding API passes its tests against libluagent.a", function()
    -- a plain build, whatever the run: the compiler and the test need no
    -- preloaded sanitizer
    local ok = os.execute("env -u LD_PRELOAD make -s build/test_embed >/dev/null")
    assert.is_true(ok == true, "building build/test_embed failed")
    local p = io.popen("env -u LD_PRELOAD ./build/test_embed 2>&1; echo \"exit=$?\"")
    local out = p:read("a")
    p:close()
    assert.matches("exit=0", out, 1, true)
  end)
end)
