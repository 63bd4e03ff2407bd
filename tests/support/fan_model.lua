-- A scripted fan-out model for specs, required inside startup scripts (so
-- every state has the same one): its first reply is calls_of(prompt), the
-- tool calls that start background tasks; the next one bg_waits on the
-- tasks they started; then it answers `final`. usage_of(step) gives the
-- usage of each step ("fan", "wait", "answer"), nil for none.
return function(luagent, calls_of, usage_of, final)
  return function(req)
    local ids, waited = {}, false
    for _, m in ipairs(req.messages) do
      if m.role == "tool" then
        local r = luagent.json.decode(m.content)
        if type(r.value) == "table" and r.value.task_id then ids[#ids + 1] = r.value.task_id end
        if type(r.value) == "table" and r.value.done ~= nil then waited = true end
      end
    end
    if #ids == 0 then
      return { tool_calls = calls_of(req.messages[2].content), usage = usage_of("fan") }
    elseif not waited then
      return { tool_calls = { { name = "bg_wait", arguments = { task_ids = ids } } }, usage = usage_of("wait") }
    end
    return { text = final, usage = usage_of("answer") }
  end
end
