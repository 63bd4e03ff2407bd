-- What `luagent run` shows while a run goes on. On a terminal: the answer
-- as it streams, and below it a table of the run's task tree (status,
-- agent, elapsed, tokens, cost) redrawn in place. Elsewhere: the answer on
-- stdout as it comes and one plain line per task event on stderr, with no
-- terminal control codes.
local compat = require("luagent.compat")
local usage = require("luagent.usage")
local tree = require("luagent.tree")

local live = {}

local ESC = "\27["

-- Rows of at most `width` characters (UTF-8 aware), split at newlines.
local function wrap(text, width, rows, partial)
  for ch in text:gmatch("[%z\1-\127\194-\244][\128-\191]*") do
    if ch == "\n" then
      rows[#rows + 1] = partial
      partial = ""
    elseif ch ~= "\r" then
      if compat.utf8_len(partial) >= width then
        rows[#rows + 1] = partial
        partial = ""
      end
      partial = partial .. (ch == "\t" and "  " or ch)
    end
  end
  return partial
end

local function cut(s, width)
  if compat.utf8_len(s) and compat.utf8_len(s) > width then
    return s:sub(1, (compat.utf8_offset(s, width) or (width + 1)) - 1)
  end
  return s
end

local function elapsed(n, now_ms)
  local from = tree.iso_ms(n.started_at) or n.started_ms
  if not from then return "-" end
  local to = tree.iso_ms(n.finished_at) or n.finished_ms or now_ms
  return string.format("%.1fs", math.max(0, to - from) / 1000)
end

-- The table of a task tree (app:tree), one line per node.
function live.table_lines(root, now_ms)
  local lines = { string.format("%-34s %-10s %-14s %8s %8s %9s", "task", "status", "agent", "elapsed",
    "tokens", "cost") }
  tree.walk(root, function(n, depth)
    local name = n.kind == "run" and "run" or n.tool or n.agent_id or "task"
    local id = n.task_id or n.run_id or ""
    local label = string.rep("  ", depth) .. name .. " " .. id:sub(-6)
    local u = n.tree_usage or n.usage
    lines[#lines + 1] = string.format("%-34s %-10s %-14s %8s %8s %9s", cut(label, 34), n.status or "?",
      cut(tostring(n.agent_id or "-"), 14), elapsed(n, now_ms),
      u and usage.format_tokens(u.total_tokens) or "-", u and usage.format_cost(u.cost) or "-")
  end)
  return lines
end

-- The terminal view: out is the terminal's stream, width its columns.
function live.tty(out, width)
  local v = { rows = {}, partial = "", footer = 0, table = {}, dirty = true, wants_table = true }
  width = math.max(20, (width or 80) - 1)
  function v.text(s)
    v.partial = wrap(s, width, v.rows, v.partial)
    v.dirty = true
  end
  function v.set_table(lines)
    v.table = lines
    v.dirty = true
  end
  function v.draw()
    if not v.dirty then return end
    local buf = {}
    if v.footer > 0 then
      buf[#buf + 1] = "\r"
      if v.footer > 1 then buf[#buf + 1] = ESC .. (v.footer - 1) .. "A" end
      buf[#buf + 1] = ESC .. "J"
    end
    for _, r in ipairs(v.rows) do buf[#buf + 1] = r .. "\n" end
    v.rows = {}
    local foot = { v.partial, "" }
    for _, l in ipairs(v.table) do foot[#foot + 1] = cut(l, width) end
    buf[#buf + 1] = table.concat(foot, "\n")
    v.footer = #foot
    out:write(table.concat(buf))
    out:flush()
    v.dirty = false
  end
  function v.finish()
    v.dirty = true
    v.draw()
    out:write("\n")
    out:flush()
  end
  return v
end

local SHOWN = { task_enqueued = "queued", task_started = "started", task_waiting = "waiting",
  task_resumed = "resumed", task_retry = "retry", task_finished = "finished" }

-- The plain view: the answer to `out` as it comes, a line per task event
-- to `err`.
function live.plain(out, err)
  local v = { wrote = false, ends_nl = true }
  function v.text(s)
    out:write(s)
    out:flush()
    v.wrote = true
    v.ends_nl = s:sub(-1) == "\n"
  end
  function v.event(ev)
    local what = SHOWN[ev.kind]
    if not what or not ev.task_id then return end
    local p = ev.payload or {}
    local extra = ev.kind == "task_finished" and (" " .. tostring(p.status) ..
      (p.error and p.error.message and (": " .. tostring(p.error.message)) or "")) or ""
    err:write(string.format("[%7.2fs] %-8s %s%s %s%s\n", ev.t or 0, what, string.rep("  ", ev.depth or 0),
      tostring(ev.agent_id or "-"), ev.task_id, extra))
    err:flush()
  end
  function v.set_table() end
  function v.draw() end
  function v.finish()
    if v.wrote and not v.ends_nl then out:write("\n") end
    out:flush()
  end
  return v
end

return live
