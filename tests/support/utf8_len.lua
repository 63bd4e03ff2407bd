-- utf8_len(s) -> the number of characters of s, or nil if s is not valid
-- UTF-8: 5.4's utf8.len, the same rule in Lua elsewhere (no overlong forms,
-- no surrogates, nothing above U+10FFFF; 5.3's utf8.len lets surrogates by).
if _VERSION == "Lua 5.4" then
  return function(s) return (utf8.len(s)) end
end

return function(s)
  local i, n, len = 1, #s, 0
  while i <= n do
    local c = s:byte(i)
    local k, min
    if c < 0x80 then k, min = 0, 0
    elseif c >= 0xC2 and c <= 0xDF then k, min = 1, 0x80
    elseif c >= 0xE0 and c <= 0xEF then k, min = 2, 0x800
    elseif c >= 0xF0 and c <= 0xF4 then k, min = 3, 0x10000
    else return nil end
    local cp = k == 0 and c or c % (2 ^ (6 - k))
    for j = 1, k do
      local b = s:byte(i + j)
      if not b or b < 0x80 or b > 0xBF then return nil end
      cp = cp * 64 + (b - 0x80)
    end
    if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then return nil end
    i, len = i + k + 1, len + 1
  end
  return len
end
