-- The stall breaker inside a real Awesome (clua.awesome's `stall` option
-- over clua.stallguard): a runaway Lua loop is interrupted with a traceback
-- and the desktop lives on.
local harness = require("support.awesome")
local testkit = require("testkit")
local clua = require("clua")

-- Awesome with the guard at `limit` seconds; debug::error messages logged.
local function start(limit)
  return assert(harness.start { rc = harness.rc(([[
    clua_spec = { errors = {} }
    awesome.connect_signal("debug::error", function(e)
      table.insert(clua_spec.errors, tostring(e))
    end)
    require("clua.awesome").setup { stall = %s }
  ]]):format(limit)) })
end

local function skip_unless_ready()
  local ok, why = harness.available()
  if not ok then pending("needs Awesome under Xvfb: " .. why) return false end
  if not clua.stallguard then
    pending("clua.stallguard is not in this build (stall.c)")
    return false
  end
  return true
end

local function stalls(wm)
  return tonumber(wm:client("return require('clua.awesome')._state.guard:stalls()"))
end

describe("the stall breaker in a real Awesome #integration", function()
  describe("with a 2 s limit", function()
    local wm
    setup(function()
      if harness.available() and clua.stallguard then wm = start(2) end
    end)
    teardown(function() if wm then wm:stop() end end)

    it("interrupts 'while true do end' within limit + 1 s, and Awesome answers", function()
      if not skip_unless_ready() then return end
      local t0 = testkit.now("monotonic")
      local out = wm:client("while true do end", 10)
      local took = testkit.now("monotonic") - t0
      assert.matches("main loop stalled", out, 1, true)
      assert.is_true(took < 2 + 1, "interrupted after " .. took .. " s")
      assert.equal(1, wm:client("return 1"))
      assert.equal(1, stalls(wm))
      -- Reported through debug::error, and counted in status().
      local report = harness.wait_until(2, function()
        return wm:client([[
          for _, e in ipairs(clua_spec.errors) do
            if e:find("main loop stalled", 1, true) then return e end
          end
          return false
        ]])
      end)
      assert.is_truthy(report, "no debug::error about the stall")
      -- with the traceback of the code that was interrupted
      assert.matches("stack traceback:", report, 1, true)
      assert.matches('[string "while true do end"]:1:', report, 1, true)
      local status = wm:client([[return require("clua.awesome").status()]])
      assert.matches("stall: limit 2 s, 1 interrupted, longest main-loop stall ", status, 1, true)
      local longest = tonumber(status:match("longest main%-loop stall ([%d.]+) s"))
      -- (measured as the lateness of the guard's 0.5 s tick timer: at least
      -- the limit minus one tick period)
      assert.is_true(longest >= 1.2 and longest < 4, "longest stall " .. longest)
    end)

    it("names the function that blocked in C (io.popen():read) in its traceback", function()
      if not skip_unless_ready() then return end
      local before = stalls(wm)
      local out = wm:client([[
        local function wait_for_the_network()
          return io.popen("sleep 5"):read("a")
        end
        return wait_for_the_network()
      ]], 15)
      assert.matches("main loop stalled", out, 1, true)
      assert.matches("wait_for_the_network", out, 1, true)
      assert.equal(before + 1, stalls(wm))
      assert.equal(1, wm:client("return 1"))
    end)

    it("never interrupts an idle Awesome over 30 s", function()
      if not skip_unless_ready() then return end
      local before = stalls(wm)
      testkit.sleep(30)
      assert.equal(before, stalls(wm))
    end)
  end)

  describe("with a 3 s limit", function()
    local wm
    setup(function()
      if harness.available() and clua.stallguard then wm = start(3) end
    end)
    teardown(function() if wm then wm:stop() end end)

    it("never interrupts a legitimate 1 s computation, 20 times in a row", function()
      if not skip_unless_ready() then return end
      for i = 1, 20 do
        local out = wm:client([[
          local GLib = require("lgi").GLib
          local t0, n = GLib.get_monotonic_time(), 0
          while GLib.get_monotonic_time() - t0 < 1e6 do n = n + 1 end
          return n
        ]])
        assert.is_number(out, "run " .. i .. ": " .. tostring(out))
      end
      assert.equal(0, stalls(wm))
    end)
  end)
end)
