--- Test bodies that several specs share, for what every clua userdata
-- holding an fd and every clua function must do alike. Each returns the
-- function given to busted's `it`, so the test's name stays in the spec:
--
--    local checks = require("support.checks")
--    it("closes idempotently, and __tostring says so",
--      checks.closes_idempotently(clua.clockwatch, "clua.clockwatch"))
--
-- Loaded by the unit specs under every Lua, so written for all of them.
-- @module support.checks

local assert = require("luassert")
local testkit = require("testkit")

local checks = {}

--- Whether `exercise(fresh)` leaves _G as it found it; `fresh` is the clua
-- module loaded again (so that loading is watched too), package.loaded
-- restored afterwards.
function checks.adds_no_globals(exercise)
  return function()
    local before = {}
    for k in pairs(_G) do before[k] = true end
    local saved = package.loaded.clua
    package.loaded.clua = nil
    local fresh = require("clua")
    package.loaded.clua = saved
    exercise(fresh)
    for k in pairs(_G) do
      assert.is_true(before[k], "new global " .. tostring(k))
    end
  end
end

--- close() twice returns true both times, and tostring says "(closed)".
-- @param open makes one handle
-- @param tname its type name ("clua.clockwatch")
function checks.closes_idempotently(open, tname)
  return function()
    local h = assert(open())
    assert.is_true(h:close())
    assert.is_true(h:close())
    assert.are.equal(tname .. " (closed)", tostring(h))
  end
end

--- Every method named in `calls` raises "TNAME is closed" on a closed
-- handle.
-- @param calls a list of {method, args...}, as `{ "wait", 0 }`
function checks.raises_when_closed(open, tname, calls)
  return function()
    local h = assert(open())
    h:close()
    for _, call in ipairs(calls) do
      local ok, err = pcall(h[call[1]], h, select(2, (table.unpack or unpack)(call)))
      assert.is_false(ok, call[1])
      assert.matches(tname .. " is closed", err, 1, true)
    end
  end
end

--- Every method named raises "TNAME expected" when called on 1, "x", {},
-- io.stdout, a handle `other()` makes (when given), or on nothing.
function checks.methods_check_self(open, tname, names, other)
  return function()
    local h = assert(open())
    local others = { 1, "x", {}, io.stdout }
    if other then others[#others + 1] = assert(other()) end
    for _, name in ipairs(names) do
      for _, bad in ipairs(others) do
        local ok, err = pcall(h[name], bad)
        assert.is_false(ok)
        assert.matches(tname .. " expected", err, 1, true)
      end
      local ok, err = pcall(h[name])
      assert.is_false(ok)
      assert.matches(tname .. " expected", err, 1, true)
    end
    h:close()
    if other then others[#others]:close() end
  end
end

--- A Lua 5.4 `<close>` variable closes the handle at scope exit.
-- Compiled with load(): older Lua cannot even parse `<close>`.
-- @param ctor the name of the clua function making it ("clockwatch")
-- @param tname its type name
function checks.closes_on_scope_exit(clua, ctor, tname)
  return function()
    local chunk = assert(load(([[
      local clua = ...
      local kept
      do
        local h <close> = assert(clua.%s())
        kept = h
      end
      return kept
    ]]):format(ctor)))
    assert.are.equal(tname .. " (closed)", tostring(chunk(clua)))
  end
end

--- 1,000 handles closed and 1,000 dropped to the collector leave the fd
-- count where it was, and count_fds does see open ones.
-- @param open makes one handle
-- @param batch how many are dropped between two collections: few enough
-- that no limit on open handles is reached before the collector runs
function checks.leaves_no_fd(open, batch)
  return function()
    collectgarbage("collect")
    collectgarbage("collect")
    local before = testkit.count_fds()
    local held = {}
    for i = 1, 10 do held[i] = assert(open()) end
    assert.are.equal(before + 10, testkit.count_fds())
    for i = 1, 10 do held[i]:close() end
    for _ = 1, 1000 do
      assert(open()):close()
    end
    assert.are.equal(before, testkit.count_fds())
    for _ = 1, 1000 / batch do
      for _ = 1, batch do assert(open()) end
      collectgarbage("collect")
      collectgarbage("collect")
    end
    assert.are.equal(before, testkit.count_fds())
  end
end

--- Defines, with `it`, the four tests of a watch's life every clua watch
-- passes: closes idempotently, raises when closed, closes through a Lua 5.4
-- `<close>` (from Lua 5.4 on: before there is nothing to test, so no test
-- rather than a skip in every other stage), leaves no fd behind.
-- @param it busted's `it`
-- @param clua the module
-- @param ctor the name of the function making a watch ("clockwatch")
-- @param closed_calls the calls that must raise on a closed watch, in
-- order, as for `raises_when_closed`
-- @param batch as for `leaves_no_fd`
function checks.watch_lifecycle(it, clua, ctor, closed_calls, batch)
  local open, tname = clua[ctor], "clua." .. ctor
  local names = {}
  for i, call in ipairs(closed_calls) do names[i] = call[1] end
  local listed = table.concat(names, ", ", 1, #names - 1) .. " and " .. names[#names]
  it("closes idempotently, and __tostring says so", checks.closes_idempotently(open, tname))
  it("raises on " .. listed .. " of a closed watch",
    checks.raises_when_closed(open, tname, closed_calls))
  if _VERSION >= "Lua 5.4" then
    it("closes through __close when a Lua 5.4 <close> variable goes out of scope",
      checks.closes_on_scope_exit(clua, ctor, tname))
  end
  it("leaves no fd behind after 1,000 watches closed and 1,000 collected",
    checks.leaves_no_fd(open, batch))
end

return checks
