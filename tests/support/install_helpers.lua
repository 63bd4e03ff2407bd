-- Helpers for the specs that install luagent and build C hosts against the
-- installed files (tests/host_spec.lua, tests/rockspec_spec.lua). Every
-- command runs without LD_PRELOAD: sanitizer runs preload their runtime for
-- the library under test, and compilers, luarocks and the installed copies
-- need none of it.
local I = {}

function I.q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs a shell command; returns its output (stdout and stderr) and exit
-- status.
function I.sh(cmd)
  local p = assert(io.popen("env -u LD_PRELOAD sh -c " .. I.q(cmd) .. " 2>&1; echo \"exit=$?\""))
  local out = p:read("*a")
  p:close()
  local code = tonumber(out:match("exit=(%d+)\n$"))
  return out:gsub("exit=%d+\n$", ""), code
end

-- Runs a shell command that must succeed; returns its output.
function I.ok(cmd)
  local out, code = I.sh(cmd)
  assert(code == 0, "command failed (exit " .. tostring(code) .. "): " .. cmd .. "\n" .. out)
  return out
end

-- A fresh temporary directory (removed by I.cleanup).
function I.tmpdir(tag)
  local d = os.tmpname()
  os.remove(d)
  d = d .. "." .. tag
  I.ok("mkdir -p " .. I.q(d))
  return d
end

function I.cleanup(dir)
  if dir then I.sh("rm -rf " .. I.q(dir)) end
end

-- What a clean clone holds, copied to dir/src (links followed: sanitizer
-- runs stage the checkout as links), with no build output.
I.SOURCES = { "Makefile", "mk", "tools", "luagent.pc.in", "core", "lua", "bin", "plugins",
  "rockspec", "examples" }

function I.copy_sources(dir)
  local src = dir .. "/src"
  local list = {}
  for i, f in ipairs(I.SOURCES) do list[i] = I.q(f) end
  I.ok("mkdir -p " .. I.q(src) .. " && cp -RL " .. table.concat(list, " ") .. " " .. I.q(src) .. "/")
  return src
end

-- The key=value pairs of examples/host/host.c's summary lines.
function I.summary(out)
  local t = {}
  for k, v in out:gmatch("([%w_]+)=([%w%.%-]+)") do t[k] = tonumber(v) or v end
  return t
end

return I
