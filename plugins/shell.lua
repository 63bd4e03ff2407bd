-- luagent.plugin("shell", opts): a tool that runs a shell command and
-- returns its exit code and output.
--
-- opts: name ("shell"), description, cwd, timeout_s (30), max_output_bytes
-- (16384), allow (a list of Lua patterns a command must match, e.g.
-- { "^ls", "^git status$" }; default: anything — with an allow list, shell
-- metacharacters (; | & $ ` < > ( ) and newlines) are refused, so a command
-- cannot chain another one past the patterns), background (as for
-- luagent.tool).
--
-- The command runs through io.popen under coreutils' `timeout`, so it never
-- outlives timeout_s. A running command is a blocking C call: a cancel (or
-- the task's deadline) ends the task background_tasks.stop_grace_s later by
-- retiring its worker, while the command runs on until it returns (at the
-- latest at timeout_s).
local luagent = require("luagent")
local options = require("luagent.options")

local shell = {}

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local spec = {
  name = "string",
  description = "string",
  cwd = "string",
  timeout_s = function(v) return options.positive(v) end,
  max_output_bytes = "integer",
  allow = "table",
  background = { "table", "boolean" },
}

function shell.new(opts)
  options.check("luagent.plugin shell", opts, spec, 4)
  opts = opts or {}
  local timeout = opts.timeout_s or 30
  local max = opts.max_output_bytes or 16384
  local allow = opts.allow
  return luagent.tool{
    name = opts.name or "shell",
    description = opts.description or
      "Run a shell command and get its exit code and combined stdout/stderr.",
    input_schema = {
      type = "object",
      properties = { command = { type = "string", description = "The command line to run." } },
      required = { "command" },
      additionalProperties = false,
    },
    background = opts.background,
    handler = function(args, ctx)
      local cmd = args.command
      if allow then
        if cmd:find("[;|&$`<>()\n\r\\]") then
          error("command not allowed: shell metacharacters are refused with an allow list", 0)
        end
        local ok = false
        for _, pat in ipairs(allow) do
          if cmd:find(pat) then
            ok = true
            break
          end
        end
        if not ok then error("command not allowed: " .. cmd, 0) end
      end
      ctx:check_cancel()
      local line = string.format("%stimeout -k 2 %s sh -c %s 2>&1; echo \"\n__luagent_exit=$?\"",
        opts.cwd and ("cd " .. quote(opts.cwd) .. " && ") or "", tostring(timeout), quote(cmd))
      local p = assert(io.popen(line, "r"))
      local out = p:read("a")
      p:close()
      ctx:check_cancel()
      local body, code = out:match("^(.*)\n__luagent_exit=(%d+)\n?$")
      body, code = body or out, tonumber(code) or -1
      local cut = #body > max
      if cut then body = body:sub(1, max) end
      return { exit_code = code, output = body, truncated = cut or nil,
        timed_out = (code == 124 or code == 137) or nil }
    end,
  }
end

return shell
