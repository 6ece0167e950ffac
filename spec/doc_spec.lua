-- The API reference (`make doc`, LDoc) documents every public name of the
-- contract, and LDoc has nothing to complain about in the sources.
local run = require("support.shell").run

local root = os.getenv("CLUA_ROOT") or "."

local contract = {
  clua = {
    "setsubreap", "getsubreap", "reap", "sweep", "children", "sigchld",
    "ignore_SIGCHLD", "clockwatch", "notify", "notify_ready",
    "notify_reloading", "notify_stopping", "notify_status",
    "notify_watchdog", "watchdog_usec", "stallguard", "timezonewatch", "tzset",
  },
  ["clua.awesome"] = { "setup", "status" },
}

describe("the API reference #integration", function()
  local dir, output, ok

  setup(function()
    local _
    _, dir = run("mktemp -d")
    ok, output = run(("cd %s && lua5.1 /usr/bin/ldoc -d %s . 2>&1"):format(root, dir))
  end)

  teardown(function()
    run("rm -rf " .. dir)
  end)

  it("builds with make doc's LDoc without a warning", function()
    assert.is_true(ok, output)
    -- LDoc prints its configuration and output lines; anything else is a
    -- complaint about a doc comment.
    for line in output:gmatch("[^\n]+") do
      if not line:match("^reading configuration") and not line:match("^output written") then
        error("LDoc: " .. line)
      end
    end
  end)

  for module, names in pairs(contract) do
    it("documents every function of " .. module, function()
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
