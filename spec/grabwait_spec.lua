-- clua-grabwait (tools/clua-grabwait.c) against a real X server (Xvfb) and
-- a real X client that grabs the keyboard as a screen locker does
-- (spec/support/xwindows.py grab): a grab already held, a grab taken while
-- it waits, none within its deadline, and its usage and display errors.
local harness = require("support.awesome")
local testkit = require("testkit")
local shell = require("support.shell")

local root = os.getenv("CLUA_ROOT") or "."
local tools = os.getenv("CLUA_TOOLS") or (root .. "/build/tools")
local GRABWAIT = tools .. "/clua-grabwait"
local XWINDOWS = root .. "/spec/support/xwindows.py"
local quote = shell.quote

-- Runs clua-grabwait with `args` (sh words) and environment prefix `env`
-- within `limit` s.  Returns its exit status, its output (stdout and
-- stderr, without the last newline) and the seconds it took.
local function grabwait(env, args, limit)
  local t0 = testkit.now("monotonic")
  local _, out, rc = shell.run(env .. quote(GRABWAIT) .. " " .. args .. " 2>&1",
    { timeout = limit or 30, what = "clua-grabwait " .. args })
  return rc, out, testkit.now("monotonic") - t0
end

-- A keyboard grabber on x's display after `delay` s (a child of this
-- process, reaped by stop()); `wait` returns once it holds the grab.
local function grabber(x, delay)
  local p = assert(io.popen(x:envprefix() .. "exec timeout 900 python3 " .. quote(XWINDOWS)
    .. " grab " .. delay .. " 2>&1", "r"))
  local g = {}
  function g.wait()
    local line = p:read("*l")
    g.pid = line and tonumber(line:match("^grabbed (%d+)$"))
    assert(g.pid, "xwindows.py grab: " .. tostring(line))
  end
  function g.stop()
    if g.pid then testkit.kill(g.pid, 15) end
    p:close()
  end
  return g
end

describe("clua-grabwait #integration", function()
  local x, cleanups

  before_each(function() cleanups = {} end)
  after_each(function()
    for i = #cleanups, 1, -1 do pcall(cleanups[i]) end
  end)

  -- Xvfb alone (and its session bus), or a skip saying why not.
  local function display()
    local ok, why = harness.available()
    if not ok then
      pending("needs Xvfb: " .. why)
      return nil
    end
    x = assert(harness.start { rc = harness.rc(""), display_only = true })
    cleanups[#cleanups + 1] = function() x:stop() end
    return x:envprefix()
  end

  it("exits 0 at once while another client holds the keyboard", function()
    local env = display()
    if not env then return end
    local g = grabber(x, 0)
    cleanups[#cleanups + 1] = g.stop
    g.wait()
    local rc, out, took = grabwait(env, "5")
    assert.equal(0, rc, out)
    assert.equal("", out)
    assert.is_true(took < 1, ("took %.2f s"):format(took))
  end)

  it("exits 0 once a client grabs the keyboard while it waits, never in its way", function()
    local env = display()
    if not env then return end
    -- The grabber starts now and grabs after 1 s; clua-grabwait's own
    -- grab, every 50 ms, must not keep it from grabbing (it retries as
    -- lockers do, and says so if it could not within 10 s).
    local g = grabber(x, 1)
    cleanups[#cleanups + 1] = g.stop
    local rc, out, took = grabwait(env, "10")
    assert.equal(0, rc, out)
    assert.is_true(took >= 0.9 and took < 5, ("took %.2f s"):format(took))
    g.wait()
  end)

  it("exits 1 when nobody grabs the keyboard within its deadline, and leaves it free",
    function()
    local env = display()
    if not env then return end
    local rc, out, took = grabwait(env, "0.5")
    assert.equal(1, rc, out)
    assert.equal("", out)
    assert.is_true(took >= 0.5 and took < 2, ("took %.2f s"):format(took))
    rc, out, took = grabwait(env, "0")
    assert.equal(1, rc, out)
    assert.is_true(took < 1, ("one try took %.2f s"):format(took))
    -- Nothing of its grab is left: a locker grabs at its first try.
    local g = grabber(x, 0)
    cleanups[#cleanups + 1] = g.stop
    g.wait()
  end)

  it("refuses bad arguments with exit 2 and one line", function()
    for _, args in ipairs { "", "abc", "-1", "1e9", "nan", "inf", "1x", "1 2", "''" } do
      local rc, out = grabwait("", args)
      assert.equal(2, rc, "clua-grabwait " .. args .. ": " .. out)
      assert.matches("^clua%-grabwait: [^\n]+$", out)
    end
    local rc, out = grabwait("", "--help")
    assert.equal(0, rc)
    assert.matches("^Usage: clua%-grabwait SECONDS\n", out)
    rc, out = grabwait("", "--version")
    assert.equal(0, rc)
    assert.matches("^clua%-grabwait %S+$", out)
  end)

  it("exits 3 with one line when the display cannot be reached", function()
    local rc, out = grabwait("env -u DISPLAY ", "1")
    assert.equal(3, rc, out)
    assert.equal('clua-grabwait: cannot open the X display ""', out)
    rc, out = grabwait("env DISPLAY=:4242 ", "1")
    assert.equal(3, rc, out)
    assert.equal('clua-grabwait: cannot open the X display ":4242"', out)
  end)
end)
