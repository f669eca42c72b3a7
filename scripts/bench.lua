-- wrk script for `make bench`: sends each pre-minted token once.
-- Arguments: FILE MODE FIRST LAST DELAY_MS
--   FILE      one token per line
--   MODE      post (form POST /handoff) or get (GET /handoff?token=)
--   FIRST     first line to use (1-based), LAST last line (0: to the end)
--   DELAY_MS  pause before each request on a connection (0: as fast as possible); with C
--             connections, C * 1000 / rate gives a constant offered rate
local tokens, i, mode, delay_ms = {}, 0, "post", 0

function init(args)
  local file = args[1]
  mode = args[2] or "post"
  local first = tonumber(args[3] or "1")
  local last = tonumber(args[4] or "0")
  delay_ms = tonumber(args[5] or "0")
  local n = 0
  for line in io.lines(file) do
    n = n + 1
    if n >= first and (last == 0 or n <= last) then
      tokens[#tokens + 1] = line
    end
  end
end

function delay()
  return delay_ms
end

function request()
  i = i + 1
  local t = tokens[((i - 1) % #tokens) + 1]
  if mode == "get" then
    return wrk.format("GET", "/handoff?token=" .. t)
  end
  return wrk.format("POST", "/handoff", { ["Content-Type"] = "application/x-www-form-urlencoded" }, "token=" .. t)
end
