-- wrk script: Directory API user notifications, each with its own message number so that
-- none is suppressed as a duplicate. Each wrk thread numbers from its own range, offset by
-- the script's first argument (`wrk … -s directory.lua URL -- OFFSET`), so that successive
-- runs against one journal send new notifications too.
local counter = 0
local thread_base = 0
local threads = {}

function setup(thread)
  thread:set("base", #threads * 100000000)
  table.insert(threads, thread)
end

function init(args)
  thread_base = (base or 0) + (tonumber(args[1]) or 0)
end

function request()
  counter = counter + 1
  local n = thread_base + counter
  local headers = {
    ["Content-Type"] = "application/json; utf-8",
    ["X-Goog-Channel-ID"] = "bench-channel",
    ["X-Goog-Channel-Token"] = "bench-token",
    ["X-Goog-Channel-Expiration"] = "Tue, 29 Oct 2030 20:32:02 GMT",
    ["X-Goog-Resource-ID"] = "ret08u3rv24htgh289g",
    ["X-Goog-Resource-URI"] = "https://admin.googleapis.com/admin/directory/v1/users?domain=example.edu&event=add",
    ["X-Goog-Resource-State"] = "add",
    ["X-Goog-Message-Number"] = tostring(n),
  }
  local body = '{"kind":"admin#directory#user","id":"' .. n .. '","etag":"\\"Mf8RAmnABsVfQ47MMT_18MHAdRE/aXvIDlz2Fd9zbAqwvIp7Pzq8UAw\\"","primaryEmail":"student' .. n .. '@example.edu"}'
  return wrk.format("POST", "/webhook/directory", headers, body)
end

function done(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format("RESULT requests=%d duration_us=%d rps=%.1f non2xx=%d connect_errors=%d read_errors=%d timeouts=%d p50_ms=%.2f p99_ms=%.2f\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6), non2xx,
    summary.errors.connect, summary.errors.read, summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
