-- Static checks that keep the Lua and the rockspecs clean: luacheck over
-- every Lua file, and `luarocks lint` on each rockspec.
local run = require("support.systemd").run

local root = os.getenv("CLUA_ROOT") or "."

describe("lint #integration", function()
  it("luacheck finds nothing in lua/, spec/, examples/ and bench/", function()
    -- Only the folders that exist yet: luacheck fails on a missing one.
    local ok, out = run("cd " .. root .. " && luacheck --no-color -q"
      .. " $(for d in lua spec examples bench; do [ -d $d ] && echo $d; done)")
    assert.is_true(ok, out)
  end)

  local _, list = run("ls " .. root .. "/rockspec/*.rockspec 2>/dev/null")
  for path in list:gmatch("[^\n]+") do
    it("luarocks lint passes on " .. path:match("[^/]+$"), function()
      local ok, out = run("luarocks lint " .. path)
      assert.is_true(ok, out)
    end)
  end
end)
