-- The API reference (`make doc`, LDoc) documents every public name of the
-- contract, and LDoc has nothing to complain about in the sources.
local shell = require("support.shell")
local run, quote = shell.run, shell.quote

local root = os.getenv("CLUA_ROOT") or "."

local contract = {
  clua = {
    "setsubreap", "getsubreap", "reap", "sweep", "children", "sigchld",
    "ignore_SIGCHLD", "clockwatch", "notify", "notify_ready",
    "notify_reloading", "notify_stopping", "notify_status",
    "notify_watchdog", "watchdog_usec", "stallguard", "timezonewatch", "tzset",
    "childwatch",
  },
  ["clua.awesome"] = { "setup", "status" },
}

-- LDoc as `make doc` finds it: $LDOC, else on PATH.
local function ldoc_missing()
  local ldoc = os.getenv("LDOC")
  if ldoc and ldoc ~= "" then return nil end
  if run("command -v ldoc") then return nil end
  return "ldoc is not on PATH (install lua-ldoc, or set LDOC): no API reference to check"
end

describe("the API reference #integration", function()
  local dir, output, ok
  local missing = ldoc_missing()

  setup(function()
    if missing then return end
    dir = shell.mktemp_dir("clua-doc")
    ok, output = run(("make -s -C %s doc LDOCFLAGS=%s"):format(quote(root),
      quote("-d " .. dir)), { timeout = 300, what = "make doc" })
  end)

  teardown(function()
    if dir then run("rm -rf " .. quote(dir)) end
  end)

  it("builds with make doc's LDoc without a warning", function()
    if missing then pending(missing) return end
    assert.is_true(ok, output)
    -- LDoc prints its configuration and output lines, and "format: ..."
    -- lines saying which markdown processor it found (the next test);
    -- anything else is a complaint about a doc comment.
    for line in output:gmatch("[^\n]+") do
      if not line:match("^reading configuration") and not line:match("^output written")
        and not line:match("^format: ") then
        error("LDoc: " .. line)
      end
    end
  end)

  it("renders the doc comments' markdown: `code` spans become <code>", function()
    if missing then pending(missing) return end
    -- Debian's LDoc needs lua-markdown (or lua-discount) for that, and
    -- Debian testing has neither: LDoc then says so and writes the
    -- comments as plain text.
    if output:find("markdown not found", 1, true) then
      pending("LDoc found no markdown processor (lua-markdown or lua-discount), "
        .. "none is installed in this release: the reference shows markdown as text")
      return
    end
    for _, file in ipairs({ "modules/clua.html", "modules/clua.awesome.html" }) do
      local f = assert(io.open(dir .. "/" .. file))
      local html = f:read("*a")
      f:close()
      assert.is_nil(html:find("`", 1, true), file .. " shows a backtick")
      assert.truthy(html:find("<code>", 1, true), file .. " has no <code>")
    end
  end)

  for module, names in pairs(contract) do
    it("documents every function of " .. module, function()
      if missing then pending(missing) return end
      local f = assert(io.open(dir .. "/modules/" .. module .. ".html"))
      local html = f:read("*a")
      f:close()
      for _, name in ipairs(names) do
        -- LDoc names a Lua module's functions after its local table
        -- (cluawm.setup), a C module's as they are (reap).
        local found = html:find('name = "' .. name .. '"', 1, true)
          or html:find('name = "[%w_]+%.' .. name .. '"')
        assert.is_truthy(found,
          module .. "." .. name .. " is not in the reference")
      end
    end)
  end
end)
