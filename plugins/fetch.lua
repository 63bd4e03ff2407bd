-- luagent.plugin("fetch", opts): a tool that GETs a URL and returns the
-- status and the start of the body, through ctx:http (cancellable).
--
-- opts: name ("fetch"), description, allow_hosts (a list of host names;
-- default: any), timeout_s (20), max_bytes (65536), background.
local luagent = require("luagent")
local options = require("luagent.options")

local fetch = {}

local spec = {
  name = "string",
  description = "string",
  allow_hosts = "table",
  timeout_s = function(v) return options.positive(v) end,
  max_bytes = "integer",
  background = { "table", "boolean" },
}

function fetch.new(opts)
  options.check("luagent.plugin fetch", opts, spec, 4)
  opts = opts or {}
  local allow
  if opts.allow_hosts then
    allow = {}
    for _, h in ipairs(opts.allow_hosts) do allow[h:lower()] = true end
  end
  local max = opts.max_bytes or 65536
  return luagent.tool{
    name = opts.name or "fetch",
    description = opts.description or "Fetch a web page or API URL (HTTP GET) and return its status and text.",
    input_schema = {
      type = "object",
      properties = { url = { type = "string", description = "An http:// or https:// URL." } },
      required = { "url" },
      additionalProperties = false,
    },
    background = opts.background,
    handler = function(args, ctx)
      local scheme, authority = args.url:match("^(https?)://([^/?#]*)")
      if not scheme then error("only http:// and https:// URLs can be fetched", 0) end
      -- no user@host (it would hide the real host from the check below)
      if authority:find("@", 1, true) then error("URLs with user info are refused", 0) end
      local host = authority:match("^%[([^%]]+)%]") or authority:match("^([^:]+)")
      if not host or host == "" then error("the URL has no host", 0) end
      if allow and not allow[host:lower()] then error("host not allowed: " .. host, 0) end
      local res, err = ctx:http{ url = args.url, timeout_s = opts.timeout_s or 20, max_bytes = max }
      if not res then error("fetch failed: " .. tostring(err), 0) end
      return { status = res.status, content_type = res.headers["content-type"], body = res.body,
        truncated = res.truncated }
    end,
  }
end

return fetch
