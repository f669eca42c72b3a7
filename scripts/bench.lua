-- wrk script for `make bench`: sends each pre-minted token once.
-- Arguments: FILE MODE FIRST LAST DELAY_MS [THREADS]
--   FILE      one token per line, or `TOKEN NONCE` for a token bound to a browser: it is sent
--             with that browser's nonce cookie
--   MODE      post (form POST /handoff) or get (GET /handoff?token=)
--   FIRST     first line to use (1-based), LAST last line (0: to the end)
--   DELAY_MS  pause before each request on a connection (0: as fast as possible); with C
--             connections, C * 1000 / rate gives a constant offered rate
--   THREADS   wrk's -t (default 1): thread k of T takes every T-th token from the k-th on, so
--             no token is sent twice
local tokens, cookies, i, mode, delay_ms = {}, {}, 0, "post", 0
local started = 0

function setup(thread)
  thread:set("id", started)
  started = started + 1
end

function init(args)
  local file = args[1]
  mode = args[2] or "post"
  local first = tonumber(args[3] or "1")
  local last = tonumber(args[4] or "0")
  delay_ms = tonumber(args[5] or "0")
  local threads = tonumber(args[6] or "1")
  local mine = id or 0
  local n = 0
  for line in io.lines(file) do
    n = n + 1
    if n >= first and (last == 0 or n <= last) and (n - first) % threads == mine then
      local token, nonce = line:match("^(%S+) (%S+)$")
      tokens[#tokens + 1] = token or line
      cookies[#tokens] = nonce and ("__Host-handoff_nonce=" .. nonce)
    end
  end
end

function delay()
  return delay_ms
end

function request()
  i = i + 1
  local n = ((i - 1) % #tokens) + 1
  local t = tokens[n]
  -- Without a cookie, GET keeps wrk's own headers (nil), as before bound tokens.
  local headers = cookies[n] and { Cookie = cookies[n] }
  if mode == "get" then
    return wrk.format("GET", "/handoff?token=" .. t, headers)
  end
  headers = headers or {}
  headers["Content-Type"] = "application/x-www-form-urlencoded"
  return wrk.format("POST", "/handoff", headers, "token=" .. t)
end
