-- clua/timezone.c against the real kernel (inotify) and the real C library.
-- The watches look at a zone file in a temporary folder, changed the ways
-- timedatectl and other tools change /etc/localtime; clua.tzset is checked
-- on a TZ naming such a file, and (root, in a mount namespace of its own)
-- on /etc/localtime itself with TZ unset.
local clua = require("clua")
local testkit = require("testkit")
local checks = require("support.checks")
local shell = require("support.shell")
local private_etc = require("support.private_etc")

local shq, run = shell.quote, shell.run
local ZONEINFO = "/usr/share/zoneinfo/"
local ENOENT, ENOTDIR = 2, 20

-- What a test set up and must undo: busted keeps one `finally` per test,
-- so the helpers below queue here and each describe's after_each runs it.
local undo = {}
local function later(f) undo[#undo + 1] = f end
local function undo_all()
  for i = #undo, 1, -1 do
    local f = undo[i]
    undo[i] = nil
    f()
  end
end

-- A temporary folder holding `localtime`, a symlink to Etc/UTC at first.
local function zonedir()
  local dir = shell.mktemp_dir("clua-tz")
  later(function() run("rm -rf " .. shq(dir)) end)
  local z = { dir = dir, path = dir .. "/localtime" }
  -- the relative target timedatectl writes, from this folder's depth
  local _, depth = dir:gsub("/[^/]+", "")
  z.up = ("../"):rep(depth) .. "usr/share/zoneinfo/"
  assert(run("ln -s " .. shq(ZONEINFO .. "Etc/UTC") .. " " .. shq(z.path)))
  return z
end

-- A symlink to zone `name` under a temporary name, renamed over localtime.
local function link(z, name)
  local tmp = z.dir .. "/.#localtime"
  assert(run("ln -sfn " .. shq(z.up .. name) .. " " .. shq(tmp)))
  assert(os.rename(tmp, z.path))
end

-- localtime made a plain file holding `name` (renamed into place).
local function copy(z, name)
  local tmp = z.dir .. "/.#localtime"
  assert(run("cp " .. shq(ZONEINFO .. name) .. " " .. shq(tmp)))
  assert(os.rename(tmp, z.path))
end

-- The plain file localtime rewritten in place: the bytes of zone `name`,
-- or `data` as given.
local function rewrite(z, name, data)
  assert(not run("test -L " .. shq(z.path)), "not on a symlink")
  shell.write_file(z.path, data or assert(shell.read_file(ZONEINFO .. name)))
end

local function watch(path)
  local w = assert(clua.timezonewatch(path))
  later(function() w:close() end)
  return w
end

-- The next event, once the fd turned readable (within 2 s).
local function next_event(w)
  assert.is_true(testkit.poll_readable(w:fd(), 2000), "the watch never turned readable")
  return w:read()
end

local function fdinfo(fd)
  return assert(shell.read_file("/proc/self/fdinfo/" .. fd))
end

local function bit(n, value) -- whether value has bit `n` set
  return math.floor(value / 2 ^ n) % 2 == 1
end

describe("clua.timezonewatch", function()
  after_each(undo_all)

  it("returns an open watch with an integer fd, on /etc/localtime by default", function()
    local w = watch()
    local fd = w:fd()
    assert.is_number(fd)
    assert.is_true(fd >= 0 and fd == math.floor(fd))
    assert.are.equal("clua.timezonewatch (fd " .. fd .. ")", tostring(w))
    assert.are.equal("clua.timezonewatch", getmetatable(w))
    local ok, target = run("readlink -m /etc/localtime")
    if ok and target:sub(1, #ZONEINFO) == ZONEINFO and run("test -L /etc/localtime") then
      assert.are.equal(target:sub(#ZONEINFO + 1), w:zone())
    else
      assert.is_string(w:zone())
    end
  end)

  it("is an inotify fd, NONBLOCK|CLOEXEC, watching the file's folder", function()
    local z = zonedir()
    local w = watch(z.path)
    local info = fdinfo(w:fd())
    local flags = tonumber(info:match("flags:%s*(%d+)"), 8)
    assert.is_true(bit(19, flags), "O_CLOEXEC (02000000) in " .. info)
    assert.is_true(bit(11, flags), "O_NONBLOCK (04000) in " .. info)
    local _, kind = run("readlink /proc/" .. testkit.getpid() .. "/fd/" .. w:fd())
    assert.are.equal("anon_inode:inotify", kind)
    local _, ino = run("stat -c %i " .. shq(z.dir))
    local watched = info:match("inotify wd:%x+ ino:(%x+)")
    assert.are.equal(tonumber(ino), tonumber(watched, 16), info)
  end)

  it("reads nil when nothing changed, and when only other files in the folder did", function()
    local z = zonedir()
    local w = watch(z.path)
    assert.are.equal("Etc/UTC", w:zone())
    assert.is_nil(w:read())
    shell.write_file(z.dir .. "/hostname", "x\n")
    assert(os.rename(z.dir .. "/hostname", z.dir .. "/hostname.old"))
    assert.is_true(testkit.poll_readable(w:fd(), 2000), "other files wake it")
    assert.is_nil(w:read())
    assert.is_false(testkit.poll_readable(w:fd(), 0), "read drains the fd")
    assert.are.equal("Etc/UTC", w:zone())
  end)

  it("reports a new symlink renamed over the old one (timedatectl) once, with both names",
    function()
    local z = zonedir()
    local w = watch(z.path)
    link(z, "Asia/Tokyo")
    assert.are.same({ old = "Etc/UTC", new = "Asia/Tokyo" }, next_event(w))
    assert.is_nil(w:read())
    assert.are.equal("Asia/Tokyo", w:zone())
    link(z, "Etc/UTC")
    assert.are.same({ old = "Asia/Tokyo", new = "Etc/UTC" }, next_event(w))
    assert.is_nil(w:read())
  end)

  it("names an absolute symlink target outside the zoneinfo folder by its path", function()
    local z = zonedir()
    local w = watch(z.path)
    assert(run("cp " .. shq(ZONEINFO .. "Asia/Tokyo") .. " " .. shq(z.dir .. "/tokyo")))
    assert(run("ln -s " .. shq(z.dir .. "//./tokyo") .. " " .. shq(z.dir .. "/.#l")))
    assert(os.rename(z.dir .. "/.#l", z.path))
    assert.are.same({ old = "Etc/UTC", new = z.dir .. "/tokyo" }, next_event(w))
  end)

  it("reports a plain file rewritten in place, named by its TZ string", function()
    local z = zonedir()
    local w = watch(z.path)
    copy(z, "Etc/UTC")
    assert.are.same({ old = "Etc/UTC", new = "UTC0" }, next_event(w))
    rewrite(z, "Asia/Tokyo")
    assert.are.same({ old = "UTC0", new = "JST-9" }, next_event(w))
    assert.is_nil(w:read())
    rewrite(z, "Europe/Paris")
    assert.are.same({ old = "JST-9", new = "CET-1CEST,M3.5.0,M10.5.0/3" }, next_event(w))
  end)

  it("reports several changes between two reads as one, from the first zone to the last", function()
    local z = zonedir()
    local w = watch(z.path)
    link(z, "Asia/Tokyo")
    link(z, "Europe/Paris")
    link(z, "America/Sao_Paulo")
    assert.are.same({ old = "Etc/UTC", new = "America/Sao_Paulo" }, next_event(w))
    assert.is_nil(w:read())
  end)

  it("does not report the same zone put back, by a new link or the same bytes", function()
    local z = zonedir()
    local w = watch(z.path)
    link(z, "Etc/UTC")
    assert.is_nil(next_event(w))
    copy(z, "Asia/Tokyo")
    assert.are.same({ old = "Etc/UTC", new = "JST-9" }, next_event(w))
    rewrite(z, "Asia/Tokyo")
    assert.is_nil(next_event(w))
  end)

  it("waits out a missing or half-written file and reports the whole one once", function()
    local z = zonedir()
    local w = watch(z.path)
    assert(os.remove(z.path))
    assert.is_nil(w:read())
    shell.write_file(z.path, "")                  -- created empty
    assert.is_nil(next_event(w))
    local tokyo = assert(shell.read_file(ZONEINFO .. "Asia/Tokyo"))
    for _, cut in ipairs { 3, 44, 60, #tokyo - 8, #tokyo - 1 } do
      rewrite(z, nil, tokyo:sub(1, cut))          -- not a whole TZif file
      assert.is_nil(next_event(w), "cut at " .. cut)
    end
    assert.are.equal("Etc/UTC", w:zone())
    rewrite(z, nil, tokyo)
    assert.are.same({ old = "Etc/UTC", new = "JST-9" }, next_event(w))
  end)

  it("does not report a symlink to nowhere", function()
    local z = zonedir()
    local w = watch(z.path)
    link(z, "No/Such_Zone")
    assert.is_nil(next_event(w))
    assert.are.equal("Etc/UTC", w:zone())
  end)

  it("starts without a zone when the file is missing, then reports it with no old name", function()
    local z = zonedir()
    assert(os.remove(z.path))
    local w = watch(z.path)
    assert.is_nil(w:zone())
    link(z, "Asia/Tokyo")
    assert.are.same({ new = "Asia/Tokyo" }, next_event(w))
  end)

  it("returns nil, message, errno for a folder that is missing or not a folder", function()
    local z = zonedir()
    local w, msg, errno = clua.timezonewatch(z.dir .. "/none/localtime")
    assert.is_nil(w)
    assert.matches("^inotify_add_watch: ", msg)
    assert.are.equal(ENOENT, errno)
    w, msg, errno = clua.timezonewatch(z.path .. "/localtime") -- a symlink to a file
    assert.is_nil(w)
    assert.matches("^inotify_add_watch: ", msg)
    assert.are.equal(ENOTDIR, errno)
  end)

  it("wait(timeout) returns nil after the timeout when nothing changes", function()
    local z = zonedir()
    local w = watch(z.path)
    local t0 = testkit.now("monotonic")
    assert.is_nil(w:wait(0.1))
    assert.is_true(testkit.now("monotonic") - t0 >= 0.099)
  end)

  it("wait() returns the change made while it waits, not an unrelated wake-up", function()
    local z = zonedir()
    local w = watch(z.path)
    local tmp = z.dir .. "/.#localtime"
    -- another file first (a wake-up that is no change), then the zone
    assert(run("(sleep 0.1; touch " .. shq(z.dir .. "/other") .. "; sleep 0.1; ln -s "
      .. shq(ZONEINFO .. "Asia/Tokyo") .. " " .. shq(tmp) .. " && mv -T " .. shq(tmp) .. " "
      .. shq(z.path) .. ") >/dev/null 2>&1 &"))
    assert.are.same({ old = "Etc/UTC", new = "Asia/Tokyo" }, w:wait(10))
  end)

  -- Watches are dropped in batches of 20: each is an inotify instance, and
  -- all the processes of a user share 128 of them
  -- (fs.inotify.max_user_instances; for root, systemd and every desktop
  -- daemon hold some).
  checks.watch_lifecycle(it, clua, "timezonewatch",
    { { "fd" }, { "zone" }, { "read" }, { "wait" } }, 20)

  describe("bad arguments", function()
    it("raise for timezonewatch with a path that is not an absolute file path", function()
      local cases = {
        { 1, "string expected, got number" },
        { {}, "string expected, got table" },
        { true, "string expected, got boolean" },
        { "etc/localtime", "absolute path expected" },
        { "", "absolute path expected" },
        { "/etc/", "path names no file" },
        { "/etc/..", "path names no file" },
        { "/etc/.", "path names no file" },
        { "/etc/local\0time", "path contains a NUL byte" },
        { "/" .. ("x"):rep(5000), "path too long" },
      }
      for _, case in ipairs(cases) do
        -- from a closure, not a tail call: older Lua and LuaJIT name a
        -- function only from its call site
        local ok, err = pcall(function() clua.timezonewatch(case[1]) end)
        assert.is_false(ok, case[2])
        assert.matches("bad argument #1 to '[%w.]*timezonewatch' %(" ..
          case[2]:gsub("%p", "%%%0") .. "%)", err)
      end
      local ok, err = pcall(function() clua.timezonewatch("/etc/localtime", 1) end)
      assert.is_false(ok)
      assert.matches("bad argument #2 to '[%w.]*timezonewatch' "
        .. "%(no more than 1 argument expected, got 2%)", err)
    end)

    it("raise for tzset with arguments", function()
      local ok, err = pcall(function() clua.tzset(1) end)
      assert.is_false(ok)
      assert.matches("bad argument #1 to '[%w.]*tzset' "
        .. "%(no more than 0 arguments expected, got 1%)", err)
    end)

    it("raise for methods called on something other than a watch",
      checks.methods_check_self(clua.timezonewatch, "clua.timezonewatch",
        { "fd", "zone", "read", "wait", "close" }, clua.clockwatch))

    it("raise for methods with surplus arguments, and for wait with a bad timeout", function()
      local w = watch()
      assert.has_error(function() w:fd(1) end)
      assert.has_error(function() w:zone(1) end)
      assert.has_error(function() w:read(1) end)
      assert.has_error(function() w:close(1) end)
      assert.has_error(function() w:wait(1, 2) end)
      for _, bad in ipairs { -1, -0.001, 0 / 0, "1", true, {} } do
        local ok, err = pcall(w.wait, w, bad)
        assert.is_false(ok, tostring(bad))
        assert.matches("bad argument #2", err, 1, true)
      end
    end)
  end)
end)

describe("clua.tzset", function()
  -- TZ as the spec process had it, put back (and loaded) after each test.
  local saved_tz = os.getenv("TZ")
  after_each(function()
    undo_all()
    assert(testkit.setenv("TZ", saved_tz))
    assert(clua.tzset())
  end)

  it("leaves TZ as it was: unset stays unset, a value keeps its value", function()
    assert(testkit.setenv("TZ", nil))
    assert.is_true(clua.tzset())
    assert.is_nil(os.getenv("TZ"))
    for _, value in ipairs { "Asia/Tokyo", ":/etc/localtime", "UTC0", "UTC1", "" } do
      assert(testkit.setenv("TZ", value))
      assert.is_true(clua.tzset())
      assert.are.equal(value, os.getenv("TZ"))
    end
  end)

  it("makes os.date follow the zone file TZ names when it changes, where tzset() alone does not",
    function()
      local z = zonedir()
      assert(testkit.setenv("TZ", ":" .. z.path))
      assert(clua.tzset())
      assert.are.equal("UTC", os.date("%Z"))
      link(z, "Asia/Tokyo")
      -- The C library still has the old zone: os.date calls localtime_r
      -- (5.1 and LuaJIT: localtime, which calls tzset itself) and TZ is
      -- the same string.
      assert.are.equal("UTC", os.date("%Z"))
      assert.is_true(clua.tzset())
      assert.are.equal("JST", os.date("%Z"))
      local t = os.time()
      assert.are.equal(os.date("!%H:%M", t + 9 * 3600), os.date("%H:%M", t))
      assert.are.equal(":" .. z.path, os.getenv("TZ"))
      copy(z, "Europe/Paris") -- a plain file, rewritten below
      rewrite(z, "America/Sao_Paulo")
      assert.is_true(clua.tzset())
      assert.are.equal("-03", os.date("%Z"))
    end)

  it("makes os.date in a plain Lua process follow /etc/localtime with TZ unset (root)", function()
    local ok, why = private_etc.available()
    if not ok then
      pending("needs a mount namespace for a private /etc (root): " .. why)
      return
    end
    local etc = private_etc.new()
    finally(function() etc:remove() end)
    etc:link("Etc/UTC")
    -- A new symlink renamed over the old one; then a plain file rewritten
    -- in place with its mtime kept, as a rewrite within the same second
    -- leaves it: tzset() alone misses that one (it compares inode and
    -- mtime seconds).
    local script = [[
      local clua = require("clua")
      local zi = "/usr/share/zoneinfo/"
      local seen = { os.date("%Z") }
      local function note() assert(clua.tzset()); seen[#seen + 1] = os.date("%Z") end
      os.execute("ln -s ../" .. zi .. "Asia/Tokyo /etc/.#lt && mv -T /etc/.#lt /etc/localtime")
      note()
      os.execute("cp " .. zi .. "Etc/UTC /etc/.#lt && mv -T /etc/.#lt /etc/localtime")
      note()
      os.execute("t=$(stat -c %Y /etc/localtime) && cat " .. zi .. "Asia/Tokyo >/etc/localtime"
        .. " && touch -m -d @$t /etc/localtime")
      note()
      print(table.concat(seen, " "), tostring(os.getenv("TZ")))
    ]]
    local cmd = "env -u TZ " .. etc:prefix() .. " " .. shq(os.getenv("CLUA_LUA")) .. " -e " ..
      shq(script)
    local _, host_before = run("ls -l --time-style=+ /etc/localtime")
    local done, out = run(cmd)
    assert.is_true(done, out)
    assert.are.equal("UTC JST UTC JST\tnil", out)
    -- what changed is the copy, not the machine's own /etc/localtime
    assert.are.equal(shell.read_file(ZONEINFO .. "Asia/Tokyo"), shell.read_file(etc.localtime))
    assert.are.equal(host_before, select(2, run("ls -l --time-style=+ /etc/localtime")))
  end)
end)

describe("examples/timezonewatch.lua", function()
  after_each(undo_all)

  it("prints one line per change, with the time in the new zone", function()
    local z = zonedir()
    local cmd = ("exec env TZ=%s timeout 20 %s %s/examples/timezonewatch.lua 2 %s")
      :format(shq(":" .. z.path), shq(os.getenv("CLUA_LUA")), shq(os.getenv("CLUA_ROOT")),
        shq(z.path))
    local out = assert(io.popen(cmd))
    finally(function() out:close() end)
    assert.are.equal("watching " .. z.path .. " (zone Etc/UTC)", out:read("*l"))
    link(z, "Asia/Tokyo")
    assert.matches("^timezone Etc/UTC %-> Asia/Tokyo: %d%d:%d%d JST$", out:read("*l"))
    copy(z, "Europe/Paris")
    assert.matches("^timezone Asia/Tokyo %-> CET%-1CEST,M3%.5%.0,M10%.5%.0/3: %d%d:%d%d CES?T$",
      out:read("*l"))
    assert.is_nil(out:read("*l")) -- it exits after COUNT changes
  end)
end)
