-- Reading an app's event stream in specs, shared by the spec helpers.
local E = {}

-- Every event of the app so far (app:events pages through the ring).
function E.all(app)
  local out, since = {}, 0
  while true do
    local page = app:events{ since = since, limit = 1000 }
    if #page == 0 then return out end
    for _, ev in ipairs(page) do
      out[#out + 1] = ev
      since = ev.seq
    end
  end
end

-- Events of `kind`, optionally only those whose `field` equals `value`.
function E.of_kind(events, kind, field, value)
  local out = {}
  for _, ev in ipairs(events) do
    if ev.kind == kind and (value == nil or ev[field] == value) then out[#out + 1] = ev end
  end
  return out
end

return E
