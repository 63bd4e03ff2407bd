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
-- The command runs through ctx:spawn in a process group of its own: a
-- cancel, the task's deadline, timeout_s or the app's close kill the whole
-- group (TERM, then KILL after grace_s, 2 s), background jobs included, and
-- so does the command's end for anything it left running. Each kill is a
-- `process_killed` event of the task.
local luagent = require("luagent")
local options = require("luagent.options")

local shell = {}

local spec = {
  name = "string",
  description = "string",
  cwd = "string",
  timeout_s = function(v) return options.positive(v) end,
  max_output_bytes = "integer",
  allow = "table",
  grace_s = function(v) return options.non_negative(v) end,
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
      local r = ctx:spawn{ cmd = cmd, cwd = opts.cwd, timeout_s = timeout, max_output_bytes = max,
        grace_s = opts.grace_s }
      return { exit_code = r.exit_code, output = r.output, truncated = r.truncated,
        timed_out = r.timed_out, killed = r.killed }
    end,
  }
end

return shell
