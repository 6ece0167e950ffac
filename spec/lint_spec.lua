-- Static checks that keep the Lua and the rockspecs clean: luacheck over
-- every Lua file, and `luarocks lint` on each rockspec.
local run = require("support.shell").run

local root = os.getenv("CLUA_ROOT") or "."

describe("lint #integration", function()
  it("luacheck finds nothing in lua/, spec/, examples/ and bench/", function()
    -- A folder that is missing fails it (luacheck says so): never a
    -- silent pass over less.
    local ok, out = run("cd " .. root .. " && luacheck --no-color -q lua spec examples bench",
      { timeout = 300, what = "luacheck" })
    assert.is_true(ok, out)
  end)

  -- luacheck knows no Lua 5.5: its compiler itself is the check there
  -- (read-only loop variables, `global` declarations).
  it("the glue and the examples compile under every installed Lua", function()
    for _, lua in ipairs({ "lua5.1", "lua5.2", "lua5.3", "lua5.4", "lua5.5", "luajit" }) do
      if run("command -v " .. lua) then
        local ok, out = run(("cd %s && for f in $(find lua examples -name '*.lua'); do "
          .. [[%s -e "assert(loadfile('$f'))" || exit 1; done]]):format(root, lua), 120)
        assert.is_true(ok, lua .. ": " .. out)
      end
    end
  end)

  local _, list = run("ls " .. root .. "/rockspec/*.rockspec 2>/dev/null")
  local found = false
  for path in list:gmatch("[^\n]+") do
    found = true
    it("luarocks lint passes on " .. path:match("[^/]+$"), function()
      local ok, out = run("luarocks lint " .. path, 120)
      assert.is_true(ok, out)
    end)
  end
  -- Rockspecs that went missing fail, not vanish from the count.
  if not found then
    it("luarocks lint: rockspec/*.rockspec exist", function()
      error("no rockspec in " .. root .. "/rockspec/")
    end)
  end
end)

describe("the version number #integration", function()
  it("is the same in clua._VERSION, watchoutput --version, the rockspec, CHANGELOG.md, "
    .. "debian/changelog", function()
    local version = require("clua")._VERSION
    assert.matches("^%d+%.%d+%.%d+$", version)
    local tools = os.getenv("CLUA_TOOLS") or (root .. "/build/tools")
    local _, out = run(tools .. "/watchoutput --version")
    assert.are.equal("watchoutput " .. version, out)
    local f = assert(io.open(root .. "/rockspec/clua-" .. version .. "-1.rockspec"))
    assert.matches('version = "' .. version:gsub("%.", "%%.") .. '%-1"', f:read("*a"))
    f:close()
    f = assert(io.open(root .. "/CHANGELOG.md"))
    assert.matches("\n## " .. version:gsub("%.", "%%.") .. " ", f:read("*a"))
    f:close()
    -- The Debian packages are native: their version is the release's.
    f = assert(io.open(root .. "/debian/changelog"))
    assert.matches("^clua %(" .. version:gsub("%.", "%%.") .. "%) ", f:read("*a"))
    f:close()
  end)
end)
