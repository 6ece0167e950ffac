-- spec/support/shell.lua: the time limits every command and wait of the
-- suite has.  A limit that runs out must fail the test, with a message
-- naming what it waited for, within the limit plus 1 s, and leave nothing
-- running: checked through busted itself, on a small spec run by a busted
-- of its own (the interpreter under test, spec/support/tap.lua's TAP and
-- times), as spec/support/check runs the suite.
local shell = require("support.shell")
local q = shell.quote

local lua = os.getenv("CLUA_LUA") or "lua"
local root = os.getenv("CLUA_ROOT") or "."

-- busted's script: run-busted exports it; else the one on PATH.
local function busted_script()
  local b = os.getenv("BUSTED")
  if b and b ~= "" then return b end
  local ok, path = shell.run("command -v busted")
  assert(ok, "busted is not on PATH")
  return path
end

-- Whether a process whose command line holds `marker` runs.  (Read in
-- /proc here: pgrep hangs with the ASan stage's runtime preloaded.)
local function running(marker)
  local _, pids = shell.run("ls /proc")
  for pid in pids:gmatch("%d+") do
    local cmdline = (shell.read_file("/proc/" .. pid .. "/cmdline") or ""):gsub("%z", " ")
    if cmdline:find(marker, 1, true) and shell.alive(pid) then return true end
  end
  return false
end

describe("support.shell", function()
  local dir

  before_each(function() dir = shell.mktemp_dir("clua-shell-spec") end)
  after_each(function() shell.run("rm -rf " .. q(dir)) end)

  describe("in a busted of its own", function()
    -- Runs `body` (the inside of a describe) as a spec file; returns its
    -- TAP and the duration of each test, by name.
    local function run_spec(body)
      shell.write_file(dir .. "/inner_spec.lua",
        'local shell = require("support.shell")\ndescribe("inner", function()\n'
        .. body .. "\nend)\n")
      local _, tap = shell.run(("cd %s && env CLUA_TIMINGS=%s %s %s -o %s inner_spec.lua"):format(
        q(dir), q(dir .. "/times"), q(lua), q(busted_script()),
        q(root .. "/spec/support/tap.lua")), { timeout = 30, what = "the inner busted" })
      local took = {}
      for line in (shell.read_file(dir .. "/times") or ""):gmatch("[^\n]+") do
        local seconds, name = line:match("^end\t%a+\t([%d.]+)\t(.*)$")
        if name then took[name] = tonumber(seconds) end
      end
      return tap, took
    end

    it("ends a command that sleeps past its limit and fails the test, within the limit + 1 s",
      function()
        local tap, took = run_spec([[
          it("sleeps", function() shell.run("sleep 30.0631", 1) end)
          it("sleeps less", function() assert.is_true((shell.run("sleep 0.1", 5))) end)
        ]])
        assert.matches("\nnot ok 1 %- inner sleeps\n", "\n" .. tap)
        assert.matches("# Failure message: [^\n]*timed out after 1 s waiting for `sleep 30.0631`",
          tap)
        assert.matches("\nok 2 %- inner sleeps less\n", tap)
        assert.is_number(took["inner sleeps"], tap)
        assert.is_true(took["inner sleeps"] >= 1 and took["inner sleeps"] <= 2,
          ("the test took %s s"):format(took["inner sleeps"]))
        assert.is_false(running("sleep 30.0631"), "the command still runs")
      end)

    it("fails a wait_for that runs out, within the limit + 1 s, naming what it waited for",
      function()
        local tap, took = run_spec([[
          it("waits", function()
            shell.wait_for("the moon", 1, function() return false, "no moon" end)
          end)
          it("waits less", function()
            local n = 0
            assert.equal(3, shell.wait_for("three", 5, function()
              n = n + 1
              return n >= 3 and n
            end))
          end)
        ]])
        assert.matches("\nnot ok 1 %- inner waits\n", "\n" .. tap)
        assert.matches("# Failure message: [^\n]*timed out after 1 s waiting for the moon; "
          .. "last seen: no moon", tap)
        assert.matches("\nok 2 %- inner waits less\n", tap)
        assert.is_true(took["inner waits"] >= 1 and took["inner waits"] <= 2,
          ("the test took %s s"):format(tostring(took["inner waits"])))
      end)
  end)

  describe("run", function()
    it("returns ok, the output (stdout and stderr) and the exit status", function()
      assert.same({ false, "out\nerr", 3 },
        { shell.run("echo out; echo err >&2; exit 3") })
      assert.same({ true, "", 0 }, { shell.run("true") })
    end)

    it("does not wait for what a command leaves running in the background", function()
      local t0 = shell.now()
      local ok, pid = shell.run("sleep 30.0632 >/dev/null 2>&1 & echo $!", 5)
      local took = shell.now() - t0
      shell.run("kill " .. pid)
      assert.is_true(ok)
      assert.is_true(took < 3, ("took %.1f s"):format(took))
    end)

    it("does not take a command's own exit status 124 for a timeout", function()
      assert.same({ false, "", 124 }, { shell.run("exit 124", 5) })
    end)

    it("ends the whole process group of a command past its limit", function()
      local ok, err = pcall(shell.run, "sleep 30.0633 & sleep 30.0634", 0.5)
      assert.is_false(ok)
      assert.matches("timed out after 0.5 s waiting for `sleep 30.0633 & sleep 30.0634`", err)
      shell.wait_for("the background sleep to end", 5, function()
        return not running("sleep 30.0633")
      end)
    end)
  end)
end)
