-- rage.text: small string helpers that stay linear on hostile input.
--
-- Lua patterns such as "^%s*(.-)%s*$" or an unanchored "%s+$" backtrack quadratically over long
-- runs of blanks; header values reach 16 KiB, so the framework trims with these instead.

local find, byte, sub = string.find, string.byte, string.sub

local _M = {}

local function blank(b)
  return b == 32 or b == 9 or b == 10 or b == 13 or b == 11 or b == 12
end

-- s without leading and trailing white space, in one pass from each end.
function _M.trim(s)
  local i = find(s, "%S")
  if not i then return "" end
  local j = #s
  while blank(byte(s, j)) do j = j - 1 end
  return sub(s, i, j)
end

-- s without trailing white space.
function _M.rtrim(s)
  local j = #s
  while j > 0 and blank(byte(s, j)) do j = j - 1 end
  return sub(s, 1, j)
end

return _M
