-- wrk script that sends requests at a fixed rate per wrk thread.
--
-- Usage: wrk -t THREADS -c CONNECTIONS -s wrk_fixed_rate.lua URL -- RATE_PER_THREAD
--
-- Each thread keeps a schedule of send times RATE_PER_THREAD per second
-- apart. Whenever one of the thread's connections is ready to send, delay()
-- gives it the next time of the schedule and returns the milliseconds until
-- then, or 0 when that time has passed.
--
-- NOTE: wrk measures latency from the moment a request is sent. When every
-- connection is waiting for a response, the next scheduled request goes out
-- late, and that wait is not counted. Use enough connections that the
-- achieved rate stays at the target.

local ffi = require("ffi")

ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } fixed_rate_timespec;
int clock_gettime(int clock_id, fixed_rate_timespec *tp);
]]

local CLOCK_MONOTONIC = 1
local clock_buffer = ffi.new("fixed_rate_timespec")
local interval_ms = nil
local next_send_ms = nil

local function monotonic_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock_buffer)
  return tonumber(clock_buffer.tv_sec) * 1000 + tonumber(clock_buffer.tv_nsec) / 1e6
end

function init(args)
  local rate = tonumber(args[1])
  if rate == nil or rate <= 0 then
    error("wrk_fixed_rate.lua: missing or invalid requests per second per thread; pass it after --")
  end
  interval_ms = 1000 / rate
end

function delay()
  local now = monotonic_ms()
  if next_send_ms == nil then
    next_send_ms = now
  end
  local wait_ms = next_send_ms - now
  next_send_ms = next_send_ms + interval_ms
  if wait_ms < 0 then
    return 0
  end
  return wait_ms
end
