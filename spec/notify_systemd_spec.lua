-- clua's notification calls against a real systemd --user manager
-- (spec/support/systemd.lua): Type=notify units whose ExecStart is a Lua
-- script using clua (spec/fixtures/notify_unit.lua), and what systemd makes
-- of each message.
local systemd = require("support.systemd")
local shell = require("support.shell")
local testkit = require("testkit")

local root = os.getenv("CLUA_ROOT") or "."
local lua = os.getenv("CLUA_LUA") or "lua"
local build = os.getenv("CLUA_BUILD") or (root .. "/build/lua5.3")
local script = root .. "/spec/fixtures/notify_unit.lua"

describe("clua notify under a real systemd --user #integration", function()
  local mgr, why_not

  setup(function()
    mgr, why_not = systemd.start()
  end)

  teardown(function()
    if mgr then mgr:stop() end
  end)

  -- An it() that is pending, with the reason, where no manager can run.
  local function it_sd(name, fn)
    it(name, function()
      if not mgr then
        pending(why_not)
        return
      end
      fn()
    end)
  end

  -- Installs name.service running the fixture with these steps; returns
  -- the folder the unit and the spec share, and a function creating a
  -- file there.
  local function unit(name, service_lines, steps)
    local dir = mgr.dir .. "/" .. name
    assert(shell.run("mkdir -p " .. shell.quote(dir)))
    mgr:install_unit(name .. ".service", table.concat({
      "[Unit]",
      "Description=clua notify spec: " .. name,
      "[Service]",
      "Type=notify",
      ("ExecStart=%s %s %s %s"):format(lua, script, dir, steps),
      "Environment=LUA_CPATH=" .. build .. "/?.so",
      "LimitCORE=0",
      "TimeoutStartSec=30",
      "TimeoutStopSec=5",
      service_lines,
      "",
    }, "\n"))
    local function touch(file, text)
      shell.write_file(dir .. "/" .. file, text or "")
    end
    local function read(file)
      return shell.read_file(dir .. "/" .. file)
    end
    return touch, read
  end

  -- Asserts with the manager's log in the message, which holds the units'
  -- stderr (there is no journal).
  local function wait(name, prop, want, timeout)
    local ok, last = mgr:wait_for(name .. ".service", prop, want, timeout)
    assert.is_true(ok, ("%s %s is %q, not %q after %d s; manager log:\n%s"):format(
      name, prop, tostring(last), tostring(want), timeout, mgr:log()))
  end

  local function show(name, prop)
    return mgr:show(name .. ".service", prop)
  end

  it_sd("a Type=notify unit becomes active only after notify_ready", function()
    local touch = unit("ready", "", "wait:go ready wait:exit")
    mgr:start("ready.service")
    wait("ready", "ActiveState", "activating", 10)
    testkit.sleep(1.5)
    assert.equal("activating", show("ready", "ActiveState"))
    touch("go")
    wait("ready", "ActiveState", "active", 10)
    assert.equal("running", show("ready", "SubState"))
    touch("exit")
    wait("ready", "ActiveState", "inactive", 10)
    assert.equal("success", show("ready", "Result"))
  end)

  it_sd("watchdog_usec is 2000000 inside a WatchdogSec=2 unit, nil in its child", function()
    local touch, read = unit("usec", "WatchdogSec=2", "usec ready ping:exit:0.5")
    mgr:start("usec.service")
    wait("usec", "ActiveState", "active", 10)
    touch("exit")
    wait("usec", "ActiveState", "inactive", 10)
    assert.equal("2000000", read("usec"))
    assert.equal("nil", read("child_usec"))
  end)

  it_sd("watchdog_usec is nil inside a unit without WatchdogSec", function()
    local _, read = unit("nousec", "", "usec ready")
    mgr:start("nousec.service")
    wait("nousec", "ActiveState", "inactive", 10)
    assert.equal("success", show("nousec", "Result"))
    assert.equal("nil", read("usec"))
  end)

  it_sd("WatchdogSec=2 unit stays active 6 s while pinging every second, "
      .. "then is killed with Result=watchdog within 3 s of its last ping", function()
    local touch, read = unit("watchdog", "WatchdogSec=2",
      "ready ping:stop:1 mark:stopped hang")
    mgr:start("watchdog.service")
    wait("watchdog", "ActiveState", "active", 10)
    local pid = show("watchdog", "MainPID")
    local until_t = testkit.now("monotonic") + 6
    while testkit.now("monotonic") < until_t do
      assert.equal("active", show("watchdog", "ActiveState"))
      assert.equal("success", show("watchdog", "Result"))
      assert.equal(pid, show("watchdog", "MainPID"))
      testkit.sleep(0.5)
    end
    touch("stop")
    wait("watchdog", "Result", "watchdog", 10)
    -- Measured, not assumed: from the unit's last ping (its own
    -- CLOCK_MONOTONIC stamp) to the manager's record of the kill (the
    -- same clock), so neither this spec's polling nor a busy machine
    -- delaying it counts. 2 s of WatchdogSec, 1 s for the manager's
    -- timer and the process's death.
    local last = tonumber(read("stop.last"))
    local killed = tonumber(show("watchdog", "ExecMainExitTimestampMonotonic")) / 1e6
    local took = killed - last
    assert.is_true(took >= 1.9 and took <= 3,
      ("killed %.2f s after the last ping"):format(took))
    assert.equal("", read("stopped"))
    wait("watchdog", "ActiveState", "failed", 10)
  end)

  it_sd("notify_status text shows in StatusText, sanitised", function()
    local touch = unit("status", "", "ready status:text wait:exit")
    touch("text", "fetching mail: 3 of 10,\tcaf\195\169")
    mgr:start("status.service")
    wait("status", "StatusText", "fetching mail: 3 of 10, caf\195\169", 10)
    touch("exit")
    wait("status", "ActiveState", "inactive", 10)
  end)

  it_sd("notify_status turns every noncharacter and surrogate into a STATUS= systemd accepts",
    function()
      -- systemd checks a STATUS= value with its own UTF-8 rules, which
      -- also refuse U+FDD0..U+FDEF and U+xFFFE and U+xFFFF of every plane;
      -- a refused status clears StatusText.  The control: the text sent
      -- raw (clua.notify) is refused; sanitised, each batch shows as sent.
      local fffd = "\239\191\189"
      local texts, shown = {}, {}
      local nonchars = {}
      for cp = 0xFDD0, 0xFDEF do nonchars[#nonchars + 1] = testkit.utf8(cp) end
      for plane = 0, 16 do
        nonchars[#nonchars + 1] = testkit.utf8(plane * 0x10000 + 0xFFFE)
        nonchars[#nonchars + 1] = testkit.utf8(plane * 0x10000 + 0xFFFF)
      end
      texts[1] = "noncharacters " .. table.concat(nonchars)
      shown[1] = "noncharacters " .. fffd:rep(#nonchars)
      -- The 2048 surrogates, each 3 bytes that become 3 U+FFFD: 450 to a
      -- batch fit one datagram.
      local cp = 0xD800
      while cp <= 0xDFFF do
        local label = ("surrogates from U+%04X "):format(cp)
        local chunk = {}
        while cp <= 0xDFFF and #chunk < 450 do
          chunk[#chunk + 1] = testkit.utf8(cp)
          cp = cp + 1
        end
        texts[#texts + 1] = label .. table.concat(chunk)
        shown[#shown + 1] = label .. fffd:rep(3 * #chunk)
      end
      local steps = { "ready", "status:base", "wait:go0", "raw:control" }
      for i = 1, #texts do
        steps[#steps + 1] = "wait:go" .. i
        steps[#steps + 1] = "status:batch" .. i
      end
      steps[#steps + 1] = "wait:exit"
      local touch = unit("nonchar", "", table.concat(steps, " "))
      touch("base", "base")
      touch("control", "STATUS=" .. texts[1])
      for i, text in ipairs(texts) do touch("batch" .. i, text) end
      mgr:start("nonchar.service")
      wait("nonchar", "StatusText", "base", 10)
      touch("go0")
      wait("nonchar", "StatusText", "", 10) -- the raw control, refused
      for i, want in ipairs(shown) do
        touch("go" .. i)
        wait("nonchar", "StatusText", want, 10)
      end
      touch("exit")
      wait("nonchar", "ActiveState", "inactive", 10)
      assert.equal("success", show("nonchar", "Result"))
    end)

  -- Starts unit `name` running `steps` and waits until it is active; then,
  -- for each {file, state} of `path`, creates the file and waits for that
  -- ActiveState; at last creates "exit" and asserts a clean end.
  local function walk(name, steps, path)
    local touch = unit(name, "", steps)
    mgr:start(name .. ".service")
    wait(name, "ActiveState", "active", 10)
    for _, step in ipairs(path) do
      touch(step[1])
      wait(name, "ActiveState", step[2], 5)
    end
    touch("exit")
    wait(name, "ActiveState", "inactive", 10)
    assert.equal("success", show(name, "Result"))
  end

  it_sd("notify_stopping moves the unit to deactivating", function()
    walk("stopping", "ready wait:go stopping wait:exit", { { "go", "deactivating" } })
  end)

  it_sd("notify_reloading moves the unit to reloading, notify_ready back", function()
    walk("reloading", "ready wait:go reloading wait:go2 ready wait:exit",
      { { "go", "reloading" }, { "go2", "active" } })
  end)

  it_sd("a WATCHDOG_USEC= message does change the WatchdogUSec property "
      .. "(the control for the injection test)", function()
    local touch = unit("raw", "WatchdogSec=3", "ready raw:text ping:exit:0.5")
    touch("text", "STATUS=raw\nWATCHDOG_USEC=5000000")
    mgr:start("raw.service")
    wait("raw", "StatusText", "raw", 10)
    wait("raw", "WatchdogUSec", "5s", 5)
    touch("exit")
    wait("raw", "ActiveState", "inactive", 10)
  end)

  it_sd("notify_status('ok\\nSTOPPING=1\\nWATCHDOG_USEC=1') leaves the unit active "
      .. "with its watchdog unchanged", function()
    local touch = unit("inject", "WatchdogSec=3", "ready status:text ping:exit:0.5")
    touch("text", "ok\nSTOPPING=1\nWATCHDOG_USEC=1")
    mgr:start("inject.service")
    wait("inject", "StatusText", "ok STOPPING=1 WATCHDOG_USEC=1", 10)
    local pid = show("inject", "MainPID")
    -- A 1 us watchdog would fire at once; a STOPPING=1 would deactivate.
    testkit.sleep(2)
    assert.equal("active", show("inject", "ActiveState"))
    assert.equal("running", show("inject", "SubState"))
    assert.equal("3s", show("inject", "WatchdogUSec"))
    assert.equal(pid, show("inject", "MainPID"))
    touch("exit")
    wait("inject", "ActiveState", "inactive", 10)
    assert.equal("success", show("inject", "Result"))
  end)
end)
