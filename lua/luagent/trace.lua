-- The timeline picture of task trees (`luagent trace`, app:trace_html): a
-- Gantt chart in SVG, one row per task indented under its parent, bars
-- coloured by status, time in the queue drawn thin, waits hatched, retries
-- marked, and a hover text (an SVG <title>) with agent, tool, tokens and
-- cost. The HTML page is self-contained: inline SVG and CSS, no script, no
-- URL, and a Content-Security-Policy that forbids every fetch.
local compat = require("luagent.compat")
local usage = require("luagent.usage")

local trace = {}

local COLORS = {
  completed = "#2e9e5b", failed = "#d64541", cancelled = "#8c8c8c", timed_out = "#e0890b",
  running = "#3b7dd8", queued = "#9fb3cc", budget_exceeded = "#e0890b", stopped = "#8c8c8c",
}
trace.COLORS = COLORS

local ROW_H, TOP, LEFT, WIDTH, INDENT = 24, 46, 360, 1180, 16

local function esc(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
    ['"'] = "&quot;", ["'"] = "&#39;" }))
end

local function secs(ms) return string.format("%.2fs", (ms or 0) / 1000) end

-- A round step for about eight ticks over `span_ms`.
local function tick_step(span_ms)
  local raw = math.max(span_ms, 1) / 8
  local p = 10 ^ math.floor(compat.log10(raw))
  for _, m in ipairs({ 1, 2, 5, 10 }) do
    if m * p >= raw then return m * p end
  end
  return 10 * p
end

local function label_of(n)
  if n.kind == "run" then return "run " .. tostring(n.agent_id or n.run_id) end
  if n.kind == "tool" then return "tool " .. tostring(n.tool) end
  return tostring(n.agent_id)
end

local function short_id(id)
  id = tostring(id or "")
  return #id > 8 and id:sub(-6) or id
end

local function tokens_text(u)
  if not u then return "no usage" end
  local t = string.format("%d tokens (%d in, %d out%s)", u.total_tokens or 0, u.prompt_tokens or 0,
    u.completion_tokens or 0, u.cached_tokens and string.format(", %d cached", u.cached_tokens) or "")
  if u.estimated then t = t .. ", estimated" end
  return t
end

-- The hover text of a row.
local function hover(row)
  local n = row.node
  local lines = { string.format("%s %s", n.kind == "run" and "foreground run" or (n.kind or "task"),
    row.id) }
  lines[#lines + 1] = "agent: " .. tostring(n.agent_id or "-")
  if n.tool then lines[#lines + 1] = "tool: " .. tostring(n.tool) end
  lines[#lines + 1] = string.format("status: %s%s", tostring(n.status),
    (n.attempts or 0) > 1 and string.format(" after %d attempts", n.attempts) or "")
  if row.start_ms and row.enqueued_ms then
    lines[#lines + 1] = string.format("queued %s, ran %s", secs(row.start_ms - row.enqueued_ms),
      secs((row.end_ms or row.start_ms) - row.start_ms))
  end
  local waited = 0
  for _, w in ipairs(row.waits) do waited = waited + (w.to - w.from) end
  if waited > 0 then lines[#lines + 1] = "waited " .. secs(waited) end
  if #row.retries > 0 then lines[#lines + 1] = string.format("retries: %d", #row.retries) end
  lines[#lines + 1] = "tokens: " .. tokens_text(n.usage)
  if n.tree_usage and n.children and #n.children > 0 then
    lines[#lines + 1] = "with descendants: " .. tokens_text(n.tree_usage)
  end
  local cost = n.usage and n.usage.cost
  local tree_cost = n.tree_usage and n.tree_usage.cost
  if cost or tree_cost then
    lines[#lines + 1] = string.format("cost: %s (with descendants %s)", usage.format_cost(cost),
      usage.format_cost(tree_cost))
  end
  if n.error and n.error.message then lines[#lines + 1] = "error: " .. tostring(n.error.message) end
  if n.prompt then
    local p = tostring(n.prompt):gsub("%s+", " ")
    lines[#lines + 1] = "prompt: " .. (#p > 120 and p:sub(1, 117) .. "..." or p)
  end
  return table.concat(lines, "\n")
end

local function bounds(rows)
  local t0, t1
  for _, r in ipairs(rows) do
    for _, v in ipairs({ r.enqueued_ms, r.start_ms, r.end_ms }) do
      if v then
        t0 = (not t0 or v < t0) and v or t0
        t1 = (not t1 or v > t1) and v or t1
      end
    end
  end
  t0 = t0 or 0
  return t0, math.max(t1 or t0, t0 + 1)
end

-- The SVG of rows (tree.rows); opts.standalone adds the XML namespace a
-- file of its own needs.
function trace.svg(rows, opts)
  opts = opts or {}
  local t0, t1 = bounds(rows)
  local chart_w = WIDTH - LEFT - 90 -- room for the status text after a bar
  local function x(ms) return LEFT + (ms - t0) / (t1 - t0) * chart_w end
  local height = TOP + #rows * ROW_H + 44
  local out = {}
  local function add(s) out[#out + 1] = s end
  add(string.format('<svg%s class="luagent-trace" width="%d" height="%d" viewBox="0 0 %d %d" ' ..
    'font-family="sans-serif" font-size="12" role="img">',
    opts.standalone and ' xmlns="http://www.w3.org/2000/svg"' or "", WIDTH, height, WIDTH, height))
  add('<defs><pattern id="wait" width="6" height="6" patternUnits="userSpaceOnUse" ' ..
    'patternTransform="rotate(45)"><rect width="6" height="6" fill="#ffffff" fill-opacity="0.55"/>' ..
    '<line x1="0" y1="0" x2="0" y2="6" stroke="#1f2d3d" stroke-width="2" stroke-opacity="0.45"/>' ..
    '</pattern></defs>')
  add(string.format('<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>', WIDTH, height))
  -- time axis
  local step = tick_step(t1 - t0)
  add('<g class="axis">')
  local v = 0
  while t0 + v <= t1 + 0.5 do
    local xx = x(t0 + v)
    add(string.format('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e3e7ec"/>', xx, TOP - 8, xx,
      TOP + #rows * ROW_H))
    add(string.format('<text x="%.1f" y="%d" text-anchor="middle" fill="#5a6572">%s</text>', xx,
      TOP - 14, (v >= 1000 or step >= 1000) and string.format("%gs", v / 1000) or string.format("%gms", v)))
    v = v + step
  end
  add(string.format('<text x="10" y="%d" font-weight="bold" fill="#1f2d3d">task</text>', TOP - 14))
  add('</g>')
  for i, r in ipairs(rows) do
    local n = r.node
    local y = TOP + (i - 1) * ROW_H
    local color = COLORS[n.status] or "#9fb3cc"
    add(string.format('<g class="task" data-task-id="%s" data-status="%s" data-depth="%d" ' ..
      'data-kind="%s">', esc(r.id), esc(n.status), r.depth, esc(n.kind or "")))
    add("<title>" .. esc(hover(r)) .. "</title>")
    if i % 2 == 0 then
      add(string.format('<rect x="0" y="%d" width="%d" height="%d" fill="#f6f8fa"/>', y, WIDTH, ROW_H))
    end
    local lx = 10 + r.depth * INDENT
    if r.depth > 0 then
      add(string.format('<path d="M%d %d V%d H%d" fill="none" stroke="#b8c2cc"/>', lx - 10, y,
        y + compat.idiv(ROW_H, 2), lx - 3))
    end
    local tokens = n.tree_usage or n.usage
    add(string.format('<text x="%d" y="%d" fill="#1f2d3d">%s <tspan fill="#7a8591">%s</tspan></text>',
      lx, y + 16, esc(label_of(n)), esc(short_id(r.id))))
    add(string.format('<text x="%d" y="%d" text-anchor="end" fill="#5a6572">%s</text>', LEFT - 8,
      y + 16, esc(tokens and (usage.format_tokens(tokens.total_tokens) .. " tok" ..
        (tokens.cost and (" " .. usage.format_cost(tokens.cost)) or "")) or "")))
    if r.enqueued_ms and r.start_ms and r.start_ms > r.enqueued_ms then
      add(string.format('<rect class="queue" x="%.1f" y="%d" width="%.1f" height="4" fill="%s" ' ..
        'fill-opacity="0.5"/>', x(r.enqueued_ms), y + 10, x(r.start_ms) - x(r.enqueued_ms), color))
    end
    for _, a in ipairs(r.attempts) do
      if a.from then
        add(string.format('<rect class="bar" x="%.1f" y="%d" width="%.1f" height="14" rx="2" ' ..
          'fill="%s"/>', x(a.from), y + 5, math.max(2, x(a.to or a.from) - x(a.from)), color))
      end
    end
    for _, w in ipairs(r.waits) do
      add(string.format('<rect class="wait" x="%.1f" y="%d" width="%.1f" height="14" ' ..
        'fill="url(#wait)"/>', x(w.from), y + 5, math.max(1, x(w.to) - x(w.from))))
    end
    for _, rt in ipairs(r.retries) do
      local xx = x(rt.at)
      add(string.format('<path class="retry" d="M%.1f %d l5 -7 h-10 z" fill="#d64541"/>', xx, y + 5))
    end
    add(string.format('<text x="%.1f" y="%d" fill="#5a6572" font-size="11">%s</text>',
      x(r.end_ms or r.start_ms or t0) + 6, y + 16, esc(n.status)))
    add("</g>")
  end
  -- legend
  local ly = TOP + #rows * ROW_H + 24
  local lx = 10
  add('<g class="legend">')
  for _, s in ipairs({ "completed", "failed", "cancelled", "timed_out", "running", "queued" }) do
    add(string.format('<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>',
      lx, ly - 10, COLORS[s], lx + 16, ly, s))
    lx = lx + 100
  end
  add(string.format('<rect x="%d" y="%d" width="24" height="12" fill="#3b7dd8"/><rect x="%d" y="%d" ' ..
    'width="24" height="12" fill="url(#wait)"/><text x="%d" y="%d">waiting</text>', lx, ly - 10, lx,
    ly - 10, lx + 28, ly))
  lx = lx + 100
  add(string.format('<path d="M%d %d l5 -7 h-10 z" fill="#d64541"/><text x="%d" y="%d">retry</text>',
    lx + 5, ly, lx + 14, ly))
  add(string.format('<text x="%d" y="%d" fill="#7a8591">thin bar: time in the queue</text>', lx + 70, ly))
  add("</g></svg>")
  return table.concat(out, "\n")
end

-- The whole page: a summary line and the chart.
function trace.html(rows, opts)
  opts = opts or {}
  local total, tasks = usage.zero(), 0
  for _, r in ipairs(rows) do
    if r.depth == 0 then usage.add(total, r.node.tree_usage or r.node.usage or usage.zero()) end
    if r.node.kind ~= "run" then tasks = tasks + 1 end
  end
  local t0, t1 = bounds(rows)
  local title = opts.title or "luagent trace"
  return table.concat({
    "<!DOCTYPE html>",
    '<html lang="en"><head><meta charset="utf-8">',
    -- nothing is fetched: no script, no image, no font, no connection
    "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; " ..
      "style-src 'unsafe-inline'\">",
    "<title>" .. esc(title) .. "</title>",
    "<style>body{font-family:sans-serif;margin:16px;color:#1f2d3d}h1{font-size:18px;margin:0 0 4px}" ..
      "p{margin:0 0 12px;color:#5a6572}.task:hover text{font-weight:bold}</style>",
    "</head><body>",
    "<h1>" .. esc(title) .. "</h1>",
    string.format("<p>%d task%s over %s &#183; %s%s</p>", tasks, tasks == 1 and "" or "s",
      secs(t1 - t0), esc(tokens_text(total)),
      total.cost and (" &#183; " .. esc(usage.format_cost(total.cost))) or ""),
    trace.svg(rows, { standalone = false }),
    "</body></html>", "",
  }, "\n")
end

return trace
