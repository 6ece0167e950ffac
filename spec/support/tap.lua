--- busted's TAP output, plus a record of what each test took.
--
--    busted -o spec/support/tap.lua ...     (spec/support/run-busted does)
--
-- Prints exactly what `-o TAP` prints (busted 2.1's own handler does it:
-- spec/support/check counts its lines).  When CLUA_TIMINGS names a file,
-- it also appends to it, one line per event, tab-separated:
--
--    start   NAME                  a test begins (so a stage that had to be
--                                  killed shows which test was running)
--    end     STATUS SECONDS NAME   it ended: success, pending, failure or
--                                  error, after SECONDS (busted's monotonic
--                                  clock)
--    retry   WHY                   the running test took a measurement again
--                                  (support.shell.retried)
--
-- spec/support/check reads these files for its report of the slowest tests
-- and of the tests that needed a retry.

return function(options)
  local busted = require("busted")
  local handler = require("busted.outputHandlers.TAP")(options)
  local path = os.getenv("CLUA_TIMINGS")
  if not path or path == "" then return handler end

  local function record(...)
    local f = io.open(path, "a")
    if not f then return end
    local fields = { ... }
    for i, v in ipairs(fields) do fields[i] = (tostring(v):gsub("[\t\n]", " ")) end
    f:write(table.concat(fields, "\t"), "\n")
    f:close()
  end

  busted.subscribe({ "test", "start" }, function(element)
    record("start", handler.getFullName(element))
    return nil, true
  end)
  busted.subscribe({ "test", "end" }, function(element, _, status)
    record("end", status, ("%.3f"):format(element.duration or 0), handler.getFullName(element))
    return nil, true
  end)
  return handler
end
