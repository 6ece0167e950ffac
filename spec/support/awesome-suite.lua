--- The awesome-suite stage of `make check`: Awesome's own integration
-- suite (tests/test-*.lua, run by upstream's tests/run.sh) of the
-- installed Awesome's version, against the installed Awesome, three ways:
--
--  * stock: upstream's rc.lua as it is;
--  * setup{}: the same rc.lua with `require("clua.awesome").setup {}` as
--    its first line (no user manager: scopes off);
--  * systemd --user: the same, Awesome run as awesome.service (shipped in
--    session/) of a real user manager (support.systemd), so scopes are on;
--    status() at each Awesome's exit must say so.
--
-- With upstream's default -W: a warning in Awesome's log fails a test.
-- Prints TAP: one line per test and way; a test that fails stock is a
-- skip in every way (reported, not counted against clua), and a way or the
-- whole stage that cannot run here is one skip saying why.  Lines
-- "# summary: ..." give each way's counts.
--
-- The tests come from Debian's source package of the installed version
-- (`apt-get source --download-only`, through a temporary deb-src list made
-- from this machine's own apt sources), never from this repository; the
-- download is kept under build/awesome-suite/, so a second run fetches
-- nothing.  What upstream's runner needs to run here is changed in a copy
-- made for each way (see `patch_runner`, each change with its reason).
--
-- Usage (from the top of the tree, after `make module tools`):
--   LUA_PATH='spec/?.lua;;' lua5.3 spec/support/awesome-suite.lua [WAY...]
-- WAY: stock, setup, systemd (all three by default).  For a closer look:
-- CLUA_SUITE_TESTS="test-spawn.lua test-focus.lua" runs only those tests,
-- CLUA_SUITE_KEEP=1 keeps each way's folder (the runner's log, run.log).

local shell = require("support.shell")
local systemd = require("support.systemd")

local quote, run, read_file, write_file = shell.quote, shell.run, shell.read_file, shell.write_file

-- The stage adopts what the runs leave behind (the runner's D-Bus daemon,
-- whatever it orphans), and reaps it once each way is over: PID 1 on a
-- build machine may reap nothing.
local clua = require("clua")
assert(clua.setsubreap(true))

local root = select(2, run("pwd"))
local CACHE = root .. "/build/awesome-suite"
local CLUA_BUILD = root .. "/build/lua5.3"
local CLUA_TOOLS = root .. "/build/tools"
-- Seconds for each way's whole run (39 tests take about a minute), and
-- for each apt-get (a mirror that does not answer).
local WAY_LIMIT, APT_LIMIT = 900, 300

local tap_count = 0
local function tap(ok, text)
  tap_count = tap_count + 1
  print(("%s %d - %s"):format(ok and "ok" or "not ok", tap_count, text))
end
local function skip(why)
  tap_count = tap_count + 1
  print(("ok %d - # SKIP %s"):format(tap_count, why))
end
local function diag(text)
  for line in tostring(text):gmatch("[^\n]+") do print("# " .. line) end
end

-- Without colours (the runner's tput) or other escapes.
local function plain(text)
  return (text:gsub("\27%[[%d;]*%a", ""):gsub("\27%(%a", ""))
end

-- The first line of `text`, for a one-line reason.
local function first_line(text)
  return (tostring(text):match("[^\n]+") or ""):gsub("%s+$", "")
end

-- The last `n` lines of `text`.
local function tail(text, n)
  local lines = {}
  for line in text:gmatch("[^\n]+") do lines[#lines + 1] = line end
  return table.concat(lines, "\n", math.max(1, #lines - n + 1))
end

-- What is missing here to run the suite at all; nil when nothing is.
local function missing()
  for _, prog in ipairs { "awesome", "awesome-client", "Xvfb", "xterm", "xrdb",
                          "dbus-launch", "dbus-send", "apt-get", "dpkg-query", "tar", "xz",
                          "bash", "cc", "timeout" } do
    if not run("command -v " .. prog) then
      return prog .. " is not installed (make deps)"
    end
  end
  if not run("pkg-config --exists xcb xcb-icccm xcb-util") then
    return "no headers for xcb, xcb-icccm, xcb-util (tests/test-gravity.c; make deps)"
  end
end

-- The Lua Awesome runs (its test clients are Lua programs using lgi's Gtk):
-- the interpreter of the liblua awesome links, lua5.3 when that fails.
local function awesome_lua()
  local _, out = run("ldd \"$(command -v awesome)\"")
  local lua = "lua" .. (out:match("libluajit") and "jit" or out:match("liblua(5%.%d)") or "5.3")
  local ok, msg = run(lua .. [[ -e 'require("lgi")']])
  if not ok then
    return nil, "the test clients need lgi for " .. lua .. ": " .. first_line(msg)
  end
  -- Gtk 3's typelib, where gir1.2-gtk-3.0 puts it (loading Gtk itself
  -- would need a display).
  if not run("ls /usr/lib/*/girepository-1.0/Gtk-3.0.typelib "
      .. "/usr/lib/girepository-1.0/Gtk-3.0.typelib 2>/dev/null | grep -q .") then
    return nil, "the test clients need Gtk 3's typelib (gir1.2-gtk-3.0; make deps)"
  end
  local _, path = run("command -v " .. lua)
  return path
end

-- The apt sources of this machine turned into deb-src entries, in dir:
-- one-line files get "deb-src" for "deb", deb822 files "Types: deb-src".
local function source_lists(dir)
  local _, files = run("ls /etc/apt/sources.list /etc/apt/sources.list.d/*.list "
    .. "/etc/apt/sources.list.d/*.sources 2>/dev/null")
  local n = 0
  for path in files:gmatch("[^\n]+") do
    local text = read_file(path) or ""
    local out = {}
    if path:match("%.sources$") then
      for line in (text .. "\n"):gmatch("([^\n]*)\n") do
        out[#out + 1] = line:match("^Types:") and "Types: deb-src" or line
      end
    else
      for line in (text .. "\n"):gmatch("([^\n]*)\n") do
        local rest = line:match("^%s*deb%s+(.*)$")
        if rest then out[#out + 1] = "deb-src " .. rest end
      end
    end
    n = n + 1
    write_file(("%s/%02d-%s"):format(dir, n, path:match("[^/]+$")),
      table.concat(out, "\n") .. "\n")
  end
  return n
end

-- The source tree (tests/ and awesomerc.lua) of the installed Awesome's
-- source version, fetched once into CACHE.  Returns its folder, or nil
-- and why it cannot be had.
local function fetch_source()
  local ok, out = run("dpkg-query -W -f='${source:Package} ${source:Version}' awesome")
  if not ok then
    return nil, "awesome is not installed as a Debian package: " .. first_line(out)
  end
  local package, version = out:match("^(%S+) (%S+)$")
  local dir = ("%s/%s_%s"):format(CACHE, package, version:gsub(":", "%%3a"))
  if read_file(dir .. "/src/tests/run.sh") then return dir end

  local apt = CACHE .. "/apt"
  assert(run(("rm -rf %s %s && mkdir -p %s/lists/partial %s/archives/partial %s/sources %s/dl")
    :format(quote(apt), quote(dir), quote(apt), quote(apt), quote(apt), quote(dir))))
  if source_lists(apt .. "/sources") == 0 then
    return nil, "no apt sources on this machine to find awesome's source package in"
  end
  -- This machine's own apt configuration, but the lists and the sources
  -- of this temporary deb-src list only: nothing of the system's changes.
  local opts = table.concat({
    "-o Dir::Etc::SourceList=/dev/null",
    "-o Dir::Etc::SourceParts=" .. quote(apt .. "/sources"),
    "-o Dir::State::Lists=" .. quote(apt .. "/lists"),
    "-o Dir::Cache=" .. quote(apt),
    "-o Dir::Cache::Archives=" .. quote(apt .. "/archives"),
    "-o APT::Sandbox::User=root",
    "-o Acquire::Retries=1",
    "-o Acquire::http::Timeout=30",
  }, " ")
  -- (apt-get's own `timeout` is the limit; run's only backs it.)
  local _, update = run(("timeout %d apt-get -q %s update"):format(APT_LIMIT, opts),
    APT_LIMIT + 30)
  local got, msg = run(("cd %s && timeout %d apt-get -q %s source --download-only %s=%s")
    :format(quote(dir .. "/dl"), APT_LIMIT, opts, package, version), APT_LIMIT + 30)
  run("rm -rf " .. quote(apt))
  local _, tarball = run("ls " .. quote(dir .. "/dl") .. "/*.orig.tar.* 2>/dev/null | head -n 1")
  if tarball == "" then
    -- Why the lists did not come (no network, a mirror down) says more
    -- than apt-get source's "You must put some 'deb-src' URIs...".
    local why = update:match("W: Failed to fetch ([^\n]+)") or msg:match("E: ([^\n]+)")
      or first_line(msg)
    run("rm -rf " .. quote(dir))
    return nil, ("no source package %s=%s from this machine's apt sources: %s")
      :format(package, version, why)
  end
  -- (The Debian part may be missing on a mirror: the .orig tarball holds
  -- tests/, and is all the stage needs.)
  if not got then
    diag("apt-get source: " .. (msg:match("E: Failed to fetch [^\n]+") or tail(msg, 1)))
  end
  ok, out = run(("mkdir -p %s/src && tar -xf %s -C %s/src --strip-components=1")
    :format(quote(dir), quote(tarball), quote(dir)))
  if not ok or not read_file(dir .. "/src/tests/run.sh") then
    run("rm -rf " .. quote(dir))
    return nil, "no tests/run.sh in " .. tarball .. ": " .. first_line(out)
  end
  return dir
end

-- tests/test-gravity.c, a helper program one test runs from build_dir
-- (upstream's CMake builds it), built once next to the source.
local function build_gravity(dir)
  local bin = dir .. "/test-gravity"
  if read_file(bin) or not read_file(dir .. "/src/tests/test-gravity.c") then return end
  local ok, out = run(("cc -o %s %s $(pkg-config --cflags --libs xcb xcb-icccm xcb-util)")
    :format(quote(bin), quote(dir .. "/src/tests/test-gravity.c")))
  if not ok then diag("test-gravity not built: " .. out) end
end

-- Upstream's runner, changed for this machine in the copy at `path`.
-- Each change must apply: a runner that changed upstream stops the stage
-- with the change that did not apply, not with a confusing failure.
local PATCHES = {
  { why = "its clean-up runs under set -e: when Awesome exited non-zero, `wait` "
      .. "ends it before the X server is killed, and the server is left running",
    from = "\ncleanup() {\n", to = "\ncleanup() {\n    set +e\n" },
  { why = "a free display, as everything on a shared machine must take "
      .. "(-displayfd), not the fixed :5",
    from = '\n    "$XVFB" $D -noreset -screen 0 "${SIZE}x24" &\n    xserver_pid=$!\n',
    to = '\n    "$XVFB" -displayfd 3 -noreset -screen 0 "${SIZE}x24" 3>"$CLUA_SUITE_DISPLAY" &\n'
      .. '    xserver_pid=$!\n'
      .. '    for _ in $(seq 200); do\n'
      .. '        grep -q "^[0-9]" "$CLUA_SUITE_DISPLAY" && break; sleep 0.05\n'
      .. '    done\n'
      .. '    D=:$(head -n 1 "$CLUA_SUITE_DISPLAY")\n' },
  { why = "the installed awesome-client, with the installed Awesome (the copy "
      .. "holds tests/ only)",
    from = '\nAWESOME_CLIENT="$source_dir/utils/awesome-client"\n',
    to = '\nAWESOME_CLIENT="$(command -v awesome-client)"\n' },
  { why = "a build machine has no D-Bus system bus, and Awesome warns once about it "
      .. "(the runner already hides that line from its own output)",
    from = '(a_glib_poll|',
    to = '(a_dbus_connect:[0-9]+: Could not connect to D-Bus system bus|a_glib_poll|' },
  { why = "Awesome run as a unit starts through systemctl (a start job, and a "
      .. "daemon-reload at the first test), and a shared build machine is slow at "
      .. "times: 10 s for Awesome to answer on D-Bus, not 3",
    from = "\n    wait_count=60  # 60*0.05s => 3s.\n",
    to = "\n    wait_count=200  # 200*0.05s => 10s.\n" },
  { why = "one line per test, for the stage to count",
    from = '\n    fi\ndone\n\necho "$count_tests tests finished."',
    to = '\n    fi\n'
      .. '    if [ "${#errors[@]}" -gt "${clua_errors:-0}" ]; then\n'
      .. '        echo "clua-suite: fail $f"\n'
      .. '    else\n'
      .. '        echo "clua-suite: pass $f"\n'
      .. '    fi\n'
      .. '    clua_errors=${#errors[@]}\n'
      .. 'done\n\necho "$count_tests tests finished."' },
}

local function patch_runner(path)
  local text = assert(read_file(path))
  for _, p in ipairs(PATCHES) do
    local s, e = text:find(p.from, 1, true)
    if not s then return nil, "upstream's tests/run.sh changed: cannot apply: " .. p.why end
    text = text:sub(1, s - 1) .. p.to .. text:sub(e + 1)
  end
  write_file(path, text)
  return true
end

-- The rc.lua of the clua ways: upstream's, after setup{} and a line that
-- writes status() at each exit, for the stage to check.
local CLUA_RC_HEAD = [[
require("clua.awesome").setup {}
awesome.connect_signal("exit", function()
    local f = assert(io.open(os.getenv("CLUA_SUITE_STATUS"), "a"))
    f:write(require("clua.awesome").status(), "\n--\n")
    f:close()
end)
]]

-- The variables the runner gives Awesome, which the unit must get too.
local AWESOME_ENV = "DISPLAY DBUS_SESSION_BUS_ADDRESS HOME SHELL PATH XDG_CONFIG_HOME "
  .. "AWESOME_THEMES_PATH AWESOME_ICON_PATH SOURCE_DIRECTORY GDK_SCALE NO_AT_BRIDGE "
  .. "TEST_PAUSE_ON_ERRORS build_dir LUA_PATH LUA_CPATH CLUA_SUITE_STATUS CLUA_SUITE_RUN"

local WAYS = {
  stock = { name = "stock" },
  setup = { name = "setup{}", clua = true },
  systemd = { name = "setup{} under systemd --user", clua = true, manager = true },
}

-- Kills whatever still carries this run's mark in its environment, then
-- reaps every child of the stage (the adopted ones), for up to 5 s.
local function kill_leftovers(mark)
  run(("for e in /proc/[0-9]*/environ; do "
    .. "if grep -qaF %s \"$e\" 2>/dev/null; then p=${e#/proc/}; kill -KILL ${p%%/environ}; fi; "
    .. "done"):format(quote("CLUA_SUITE_RUN=" .. mark)))
  local deadline = systemd.uptime() + 5
  repeat
    clua.sweep(0)
    local kids = clua.children()
    if not kids or #kids == 0 then return end
    run("sleep 0.1")
  until systemd.uptime() > deadline
end

-- Runs the suite one way.  Returns {results = {[test] = {ok=, text=}},
-- order = {test...}, status = status() texts (clua ways)}, or nil and why
-- (a skip), or raises.
local function run_way(way, src, lua)
  local mgr, why
  if way.manager then
    mgr, why = systemd.start()
    if not mgr then return nil, "needs a systemd user manager: " .. why end
  end
  local work = shell.mktemp_dir("clua-awesome-suite")
  local ok, res = pcall(function()
    assert(run(("cp -r %s %s/tests && mkdir %s/build %s/bin"):format(
      quote(src .. "/src/tests"), quote(work), quote(work), quote(work))))
    local patched, msg = patch_runner(work .. "/tests/run.sh")
    if not patched then error(msg, 0) end
    -- build_dir: the installed awesome (or the unit standing in for it) and
    -- its library, where the runner looks for them.
    local _, awesome = run("command -v awesome")
    if way.manager then awesome = root .. "/spec/support/awesome-suite-unit" end
    assert(run(("ln -s %s %s/build/awesome && ln -s /usr/share/awesome/lib %s/build/lib")
      :format(quote(awesome), quote(work), quote(work))))
    if read_file(src .. "/test-gravity") then
      assert(run(("ln -s %s %s/build/test-gravity")
        :format(quote(src .. "/test-gravity"), quote(work))))
    end
    -- `lua` for the test clients: the Lua Awesome runs, which has lgi.
    assert(run(("ln -s %s %s/bin/lua"):format(quote(lua), quote(work))))
    local rc = src .. "/src/awesomerc.lua"
    if way.clua then
      write_file(work .. "/rc.lua", CLUA_RC_HEAD .. assert(read_file(rc)))
      rc = work .. "/rc.lua"
    end
    local env = {
      HEADLESS = "1", TEST_PAUSE_ON_ERRORS = "0",
      CMAKE_BINARY_DIR = work .. "/build",
      AWESOME_RC_FILE = rc,
      AWESOME_THEMES_PATH = "/usr/share/awesome/themes",
      AWESOME_ICON_PATH = "/usr/share/awesome/icons",
      PATH = work .. "/bin:" .. CLUA_TOOLS .. ":" .. (os.getenv("PATH") or "/usr/bin:/bin"),
      CLUA_SUITE_DISPLAY = work .. "/display",
      CLUA_SUITE_RUN = work,
    }
    if way.clua then
      env.LUA_PATH = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;;"
      env.LUA_CPATH = CLUA_BUILD .. "/?.so;;"
      env.CLUA_SUITE_STATUS = work .. "/status"
    end
    if mgr then
      env.CLUA_SUITE_XDG_RUNTIME_DIR = mgr.env.XDG_RUNTIME_DIR
      env.CLUA_SUITE_MANAGER_HOME = mgr.env.HOME
      env.CLUA_SUITE_ENV = AWESOME_ENV
      -- The session's units as shipped; the unit standing in for awesome
      -- adds a drop-in for each test.
      local _, units = run("ls " .. quote(root .. "/session"))
      for unit in units:gmatch("[^\n]+") do
        if unit:match("%.service$") or unit:match("%.target$") then
          write_file(mgr.unitdir .. "/" .. unit, assert(read_file(root .. "/session/" .. unit)))
        end
      end
    end
    local assigns = {}
    for k, v in pairs(env) do assigns[#assigns + 1] = k .. "=" .. quote(v) end
    -- Not the caller's session: no user manager (way 2 runs without one),
    -- no notify socket, no Lua settings.
    local cmd = ("cd %s && env -u XDG_RUNTIME_DIR -u NOTIFY_SOCKET -u WATCHDOG_USEC "
      .. "-u WATCHDOG_PID -u LUA_PATH -u LUA_CPATH -u LUA_INIT -u LUA_PATH_5_3 "
      .. "-u LUA_CPATH_5_3 -u LUA_INIT_5_3 -u DISPLAY -u DBUS_SESSION_BUS_ADDRESS "
      .. "%s timeout -k 10 %d bash tests/run.sh -W %s >%s 2>&1 </dev/null"):format(
      quote(work), table.concat(assigns, " "), WAY_LIMIT, os.getenv("CLUA_SUITE_TESTS") or "",
      quote(work .. "/run.log"))
    -- (The command's own `timeout` is the limit; this one only backs it.)
    local _, _, code = run(cmd, { timeout = WAY_LIMIT + 30,
      what = "Awesome's suite, " .. way.name })
    local log = plain(read_file(work .. "/run.log") or "")
    local out = { results = {}, order = {}, code = code, log = log }
    -- Each test's lines run from "== Running F ==" to "clua-suite: pass|fail F".
    local each = "== Running ([^\n]-) ==\n(.-)clua%-suite: (%a+) [^\n]*"
    for test, body, verdict in log:gmatch(each) do
      local name = test:match("[^/]+$")
      out.order[#out.order + 1] = name
      out.results[name] = { ok = verdict == "pass",
                            text = body:match("===> ERROR running.*") or body }
    end
    if way.clua then out.status = read_file(work .. "/status") or "" end
    if mgr then
      out.manager_log = mgr:log()
      out.unit_log = read_file(work .. "/unit.log") or ""
    end
    return out
  end)
  if mgr then
    if os.getenv("CLUA_SUITE_KEEP") then write_file(work .. "/manager.log", mgr:log()) end
    mgr:stop()
  end
  kill_leftovers(work)
  if os.getenv("CLUA_SUITE_KEEP") then
    diag(way.name .. ": kept " .. work)
  else
    run("rm -rf " .. quote(work))
  end
  if not ok then error(res, 0) end
  return res
end

local function main(args)
  local why = missing()
  local lua
  if not why then lua, why = awesome_lua() end
  local src
  if not why then src, why = fetch_source() end
  if not src then
    skip("Awesome's own suite: " .. why)
    print("1.." .. tap_count)
    return
  end
  build_gravity(src)

  local names = #args > 0 and args or { "stock", "setup", "systemd" }
  local stock_fails = nil     -- test -> why, once the stock way ran
  for _, key in ipairs(names) do
    local way = assert(WAYS[key], "unknown way " .. key .. " (stock, setup, systemd)")
    local t0 = systemd.uptime()
    local res, skipped = run_way(way, src, lua)
    local took = math.floor(systemd.uptime() - t0 + 0.5)
    if not res then
      skip(way.name .. ": " .. skipped)
      print(("# summary: %s: skipped: %s"):format(way.name, skipped))
    else
      local passed, failed, known_bad = 0, 0, 0
      if #res.order == 0 then
        tap(false, ("%s: the runner ran no test (exit status %s)"):format(way.name,
          tostring(res.code)))
        diag(tail(res.log, 30))
        failed = 1
      end
      for _, test in ipairs(res.order) do
        local r = res.results[test]
        if key == "stock" then
          if r.ok then
            passed = passed + 1
            tap(true, way.name .. ": " .. test)
          else
            stock_fails = stock_fails or {}
            local said = first_line((r.text:gsub("^===> ERROR running [^\n]*\n?", "")))
            stock_fails[test] = said ~= "" and said or "the test did not say it finished"
            known_bad = known_bad + 1
            skip(test .. " fails with stock Awesome (not counted against clua): "
              .. stock_fails[test])
          end
        elseif stock_fails and stock_fails[test] then
          known_bad = known_bad + 1
          skip(test .. " fails with stock Awesome (not counted against clua), and "
            .. (r.ok and "passes" or "fails") .. " " .. way.name)
        else
          if r.ok then passed = passed + 1 else failed = failed + 1 end
          tap(r.ok, way.name .. ": " .. test)
          if not r.ok then
            diag(tail(r.text, 25))
            if res.unit_log then diag("awesome.service so far:\n" .. tail(res.unit_log, 3)) end
          end
        end
      end
      if key == "stock" then stock_fails = stock_fails or {} end
      -- Every Awesome of a clua way ran setup{}: status() at each exit says
      -- so, and under the manager that applications got scopes.
      local checked = ""
      if way.clua and #res.order > 0 then
        local exits, good_exits, apps = 0, 0, 0
        for entry in res.status:gmatch("(.-)\n%-%-\n") do
          exits = exits + 1
          local scopes = entry:match("\nscopes: (%a+)")
          if entry:match("^subreaper: on") and scopes == (way.manager and "on" or "off") then
            good_exits = good_exits + 1
          end
          apps = apps + (tonumber(entry:match("\nscopes: on, (%d+)")) or 0)
        end
        local good = exits >= #res.order and good_exits == exits
        tap(good, ("%s: status() says subreaper on, scopes %s, at each of Awesome's %d exits "
          .. "(%d tests)%s"):format(way.name, way.manager and "on" or "off", exits, #res.order,
          way.manager and (": " .. apps .. " applications started in scopes") or ""))
        checked = good and "; status() check passed" or "; status() check FAILED"
        if not good then
          diag(tail(res.status, 20))
          if res.manager_log then diag(tail(res.manager_log, 20)) end
        end
      end
      print(("# summary: %s: %d of %d tests passed, %d failed, %d fail with stock Awesome "
        .. "(not counted)%s; %ds"):format(way.name, passed, #res.order, failed, known_bad,
        checked, took))
    end
  end
  if stock_fails and next(stock_fails) then
    for test, text in pairs(stock_fails) do
      print(("# summary: fails with stock Awesome (not counted): %s: %s"):format(test, text))
    end
  end
  print("1.." .. tap_count)
end

main(arg)
