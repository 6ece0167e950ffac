-- clua.awesome's setup() (lua/clua/awesome.lua) in a real, headless
-- Awesome: options clua refuses, features that cannot start, and, under a
-- real systemd user manager running the shipped session, applications
-- launched while rc.lua still runs (before READY=1) and during a restart
-- in place.
local harness = require("support.awesome")
local testkit = require("testkit")

local function skip_unless_available()
  local ok, why = harness.available()
  if not ok then pending("needs Awesome under Xvfb: " .. why) end
  return ok
end

-- Runs fn(wm) on a fresh Awesome started with harness.start(args), then
-- stops it, whether fn failed or not (busted keeps one finally per test,
-- and one test here starts two of them).  Returns fn's first two values.
local function with_awesome(args, fn)
  local wm = assert(harness.start(args))
  local ok, a, b = pcall(fn, wm)
  wm:stop()
  if not ok then error(a, 0) end
  return a, b
end


-- What each feature's status line must say when it runs (outside a user
-- manager, where scopes say why they cannot).
local RUNNING = {
  subreaper = "^subreaper: on, ",
  clock = "^clock: watching fd %d+ via ",
  timezone = "^timezone: ",
  watchdog = "^watchdog: not enabled by a service manager$",
  stall = "^stall: limit 10 s, ",
  scopes = "^scopes: off %(no systemd user manager%)$",
  restore = "^restore: windows keep their tags, screen and state across restarts, ",
}

-- Starts Awesome with setup(`options`) and checks: rc.lua went on past
-- setup(), exactly the lines `reported` (patterns) were reported, each one
-- line, once in debug::error and once on stderr; status() has one line
-- per feature, `expect[name]` (a pattern) for those given, RUNNING for
-- the others; no "nil" anywhere.
local function check_setup(options, reported, expect, before)
  if not skip_unless_available() then return end
  return with_awesome({ rc = harness.setup_rc(options, before) }, function(wm)
    assert.is_true(wm:client("return clua_spec.after"), "rc.lua did not go on after setup()")
    assert.is_true(wm:client("return clua_spec.returned"))
    local errors = wm:client("return table.concat(clua_spec.errors, '\\n')")
    local lines = {}
    for l in errors:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal(#reported, #lines, "reported:\n" .. errors)
    local log = harness.readfile(wm.dir .. "/awesome.log") or ""
    for i, pattern in ipairs(reported) do
      assert.matches("^clua%.awesome: setup: " .. pattern, lines[i])
      local _, on_stderr = log:gsub((lines[i]:gsub("%p", "%%%0")), "")
      assert.equal(1, on_stderr, "stderr:\n" .. log)
    end
    local status = wm:client([[return require("clua.awesome").status()]])
    local by_feature = {}
    for l in status:gmatch("[^\n]+") do
      local name = l:match("^(%a+):")
      if RUNNING[name] and not by_feature[name] then by_feature[name] = l end
    end
    for name, running in pairs(RUNNING) do
      local want = expect[name] or running
      assert.is_truthy((by_feature[name] or ""):match(want),
        name .. " in status() does not match " .. want .. ":\n" .. status)
    end
    assert.not_matches("nil", status)
    -- Every feature that runs, really: checked in Awesome, not in status().
    local state = wm:client([[
      local s = require("clua.awesome")._state
      return table.concat({
        "subreaper=" .. tostring(require("clua").getsubreap()),
        "clock=" .. tostring(s.clock.watch ~= nil),
        "timezone=" .. tostring(s.timezone.watch ~= nil),
        "stall=" .. tostring(s.stall.guard ~= nil),
        "restore=" .. tostring(s.restore.started),
        "ready=" .. tostring(s.watchdog.ready_sent),
      }, " ")
    ]])
    return state, status
  end)
end

describe("clua.awesome.setup with options clua refuses #integration", function()
  it("stall = 100000: one line, the stall breaker off, every other feature on", function()
    local state = check_setup("{ stall = 100000 }",
      { "bad option stall = 100000 %(true, false or a number of seconds above 0 and at most "
        .. "86400 expected%): stall is off$" },
      { stall = "^stall: off %(bad option 100000, true, false or a number of seconds above 0 "
        .. "and at most 86400 expected%)$" })
    if state then
      assert.equal("subreaper=true clock=true timezone=true stall=false restore=true ready=true",
        state)
    end
  end)

  it("stall = -1: one line, the stall breaker off, every other feature on", function()
    local state = check_setup("{ stall = -1 }",
      { "bad option stall = %-1 %(true, false or a number of seconds above 0 and at most "
        .. "86400 expected%): stall is off$" },
      { stall = "^stall: off %(bad option %-1, " })
    if state then
      assert.equal("subreaper=true clock=true timezone=true stall=false restore=true ready=true",
        state)
    end
  end)

  it("nosuch = true: one line, every feature on", function()
    local state = check_setup("{ nosuch = true }",
      { 'unknown option "nosuch" %(ignored; the options are subreaper, clock, timezone, '
        .. "watchdog, stall, scopes, restore, sleep%)$" }, {})
    if state then
      assert.equal("subreaper=true clock=true timezone=true stall=true restore=true ready=true",
        state)
    end
  end)

  it('clock = "yes": one line, the clock off, every other feature on', function()
    local state = check_setup('{ clock = "yes" }',
      { 'bad option clock = "yes" %(true or false expected%): clock is off$' },
      { clock = '^clock: off %(bad option "yes", true or false expected%)$' })
    if state then
      assert.equal("subreaper=true clock=false timezone=true stall=true restore=true ready=true",
        state)
    end
  end)

  it("several at once, and a non-table argument: one line each, the rest on", function()
    check_setup('{ clock = "yes", subreaper = 0, nosuch = 1, [2] = true }',
      { 'unknown option "nosuch" %(ignored', "unknown option 2 %(ignored",
        "bad option subreaper = 0 ", 'bad option clock = "yes"' },
      { clock = "^clock: off %(bad option", subreaper = "^subreaper: off %(bad option 0, " })
    local state = check_setup('"everything"',
      { 'bad argument #1 %(a table of options expected, got "everything"%): every feature '
        .. "starts with its default$" }, {})
    if state then
      assert.equal("subreaper=true clock=true timezone=true stall=true restore=true ready=true",
        state)
    end
  end)

  it("says off (setup option) for a feature turned off", function()
    check_setup("{ clock = false, stall = false, scopes = false, restore = false }", {}, {
      clock = "^clock: off %(setup option%)$",
      stall = "^stall: off %(setup option%)$",
      scopes = "^scopes: off %(setup option%)$",
      restore = "^restore: off %(setup option%)$",
    })
  end)
end)

describe("clua.awesome.setup with a feature that cannot start #integration", function()
  it("reports why, status() says failed and why, every other feature runs", function()
    if not skip_unless_available() then return end
    -- Another stall guard already runs (one per process), and the place
    -- property is taken, with another type, by something else in rc.lua.
    local rc = harness.setup_rc("{}", [[
      clua_spec.guard = require("clua").stallguard(3600)
      awesome.register_xproperty("clua.awesome.place", "string")
    ]])
    with_awesome({ rc = rc }, function(wm)
      assert.is_true(wm:client("return clua_spec.after"))
      local errors = wm:client("return table.concat(clua_spec.errors, '\\n')")
      local lines = {}
      for l in errors:gmatch("[^\n]+") do lines[#lines + 1] = l end
      assert.equal(2, #lines, errors)
      assert.matches("^clua%.awesome: stallguard: stallguard: a guard is already running", lines[1])
      assert.matches("^clua%.awesome: restore: could not start: .*clua%.awesome%.place", lines[2])
      local status = wm:client([[return require("clua.awesome").status()]])
      assert.matches("\nstall: failed: stallguard: a guard is already running", status)
      assert.matches("\nrestore: failed: .*clua%.awesome%.place", status)
      assert.matches("^subreaper: on", status)
      assert.matches("\nclock: watching", status)
      assert.not_matches("nil", status)
    end)
  end)
end)

-- Under a real user manager, the shipped units started by the session
-- command (as ~/.xsession would): an rc.lua that launches a program, then
-- sleeps 5 s before it ends (READY=1 goes out after it).
describe("clua.awesome launching applications before READY=1 #integration", function()
  local systemd = require("support.systemd")
  local shell = require("support.shell")

  -- The rc.lua: setup(`options`), then a program that writes the uptime
  -- at which it runs and its cgroup into DIR/ran.PID and DIR/cgroup.PID,
  -- where rc.lua wrote the uptime of the call (DIR/called.PID), then 5 s
  -- of sleep.
  local function launching_rc(dir, options)
    return harness.rc(([[
      local function uptime()
        local f = io.open("/proc/uptime")
        local t = f:read("n")
        f:close()
        return t
      end
      require("clua.awesome").setup(%s)
      local dir = %q
      local at = uptime()
      local pid = require("awful").spawn({ "sh", "-c",
        'read t _ </proc/uptime; echo "$t" >"$0/ran.$$"; cat /proc/self/cgroup >"$0/cgroup.$$"; '
        .. 'exec sleep 600', dir })
      local f = io.open(dir .. "/called." .. tostring(pid), "w")
      f:write(tostring(at), "\n")
      f:close()
      os.execute("sleep 5")
    ]]):format(options, dir))
  end

  -- Every launch rc.lua made so far: { pid, called, ran, cgroup }, by pid.
  local function launches(dir)
    local _, list = shell.run("ls " .. shell.quote(dir))
    local found = {}
    for pid in list:gmatch("called%.(%d+)") do
      local function num(name)
        return tonumber((harness.readfile(dir .. "/" .. name .. "." .. pid) or ""):match("[%d.]+"))
      end
      found[pid] = { pid = pid, called = num("called"), ran = num("ran"),
        cgroup = harness.readfile(dir .. "/cgroup." .. pid) }
    end
    return found
  end

  -- The launch: ran within 200 ms of the call, in an app-*.scope of
  -- app.slice.
  local function check_launch(l)
    assert.is_number(l.ran, "the program launched from rc.lua (pid " .. l.pid .. ") never ran")
    assert.is_true(l.ran - l.called < 0.2,
      ("the program ran %.2f s after the call"):format(l.ran - l.called))
    local scope = l.cgroup:match("[^\n]*:name=systemd:([^\n]*)")
      or l.cgroup:match("0::([^\n]*)")
    assert.matches("/app%.slice/app%-awesome%-read%-%x+%.scope$", scope or l.cgroup)
  end

  local function run_session(options, unit_extra)
    local ok, why = harness.available()
    if not ok then return pending("needs Awesome under Xvfb: " .. why) end
    local mgr
    mgr, why = systemd.start { own_cgroup = true }
    if not mgr then return pending("needs a systemd user manager: " .. why) end
    local dir = shell.mktemp_dir("clua-launch")
    local wm
    -- (busted keeps one finally per test: the last one given)
    finally(function()
      if wm then wm:stop() end
      mgr:stop()
      shell.run("rm -rf " .. shell.quote(dir))
    end)
    wm = assert(harness.start { rc = launching_rc(dir, options), manager = mgr,
      session = true, unit_extra = unit_extra, timeout = 30 })
    return mgr, wm, dir
  end

  -- After start-up: the service active, nothing queued.
  local function check_settled(mgr)
    assert(mgr:wait_for("awesome.service", "ActiveState", "active", 10),
      "awesome.service did not become active within 10 s")
    local jobs
    assert(harness.wait_until(5, function()
      jobs = select(2, mgr:systemctl("list-jobs"))
      return jobs == "No jobs running."
    end), "jobs still queued 5 s after start-up:\n" .. tostring(jobs))
  end

  it("starts them at once, in their scopes, before READY=1 and during a restart in place",
  function()
    local mgr, wm, dir = run_session("{}")
    if not mgr then return end
    check_settled(mgr)
    local first = launches(dir)
    local pid, l = next(first)
    assert.is_not_nil(pid, "rc.lua launched nothing")
    check_launch(l)
    -- The same rc.lua again, restarted in place: the unit is "reloading"
    -- until the new image's READY=1.
    assert(wm:restart(30))
    check_settled(mgr)
    local n = 0
    for p, again in pairs(launches(dir)) do
      if not first[p] then
        n = n + 1
        check_launch(again)
      end
    end
    assert.equal(1, n, "launches after the restart")
    assert.equal("0", mgr:show("awesome.service", "NRestarts"))
  end)

  it("with watchdog = false: READY=1 all the same, and no watchdog kill (WatchdogSec=4)",
  function()
    -- Without WATCHDOG_USEC=0, systemd would kill this Awesome 4 s after
    -- its start, during the rc.lua's sleep.
    local mgr, wm, dir = run_session("{ watchdog = false }", { "WatchdogSec=4" })
    if not mgr then return end
    check_settled(mgr)
    local pid, l = next(launches(dir))
    assert.is_not_nil(pid, "rc.lua launched nothing")
    check_launch(l)
    local status = wm:client([[return require("clua.awesome").status()]])
    assert.matches("\nwatchdog: off %(setup option%); systemd was told to stop its 4 s "
      .. "watchdog %(WATCHDOG_USEC=0%)\nservice manager: READY=1 sent\n", status)
    -- Two watchdog intervals later: the same Awesome.
    local main = wm:pid()
    testkit.sleep(8)
    assert.equal("active", mgr:show("awesome.service", "ActiveState"), wm:logtail(60))
    assert.equal("0", mgr:show("awesome.service", "NRestarts"))
    assert.equal(main, wm:pid())
  end)
end)
