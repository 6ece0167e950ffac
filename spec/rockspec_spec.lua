-- rockspec/clua-scm-1.rockspec: `luarocks make`, offline, into a scratch
-- tree, builds a clua that each Lua then loads from that tree alone.
local shell = require("support.shell")
local quote, run = shell.quote, shell.run

local root = os.getenv("CLUA_ROOT") or "."


describe("luarocks make rockspec/clua-scm-1.rockspec #integration", function()
  local tmp, offline

  setup(function()
    -- A private network namespace has no network at all: proof that the
    -- build needs none.
    offline = run("unshare -n true") and "unshare -n " or ""
  end)
  -- Each Lua its own tree and HOME: nothing one build left is seen by the
  -- next.
  before_each(function() tmp = shell.mktemp_dir("clua-rock") end)
  after_each(function() run("rm -rf " .. quote(tmp)) end)

  for _, v in ipairs({ "5.1", "5.3", "5.4", "5.5" }) do
    it("builds offline with --tree and Lua " .. v .. " then loads from that tree", function()
      -- Lua 5.5 is packaged from Debian testing on.
      if not run("command -v lua" .. v .. " && pkg-config --exists lua" .. v) then
        pending("lua" .. v .. " or its headers (liblua" .. v .. "-dev) are not installed")
        return
      end
      local tree = tmp .. "/tree"
      local ok, out = run(("cd %s && HOME=%s %sluarocks --lua-version %s make "
        .. "rockspec/clua-scm-1.rockspec --tree %s"):format(
        quote(root), quote(tmp), offline, v, quote(tree)),
        { timeout = 300, what = "luarocks make for Lua " .. v })
      assert.is_true(ok, out)
      assert.matches("clua scm%-1 is now installed", out)

      -- Only the tree on the paths: nothing else could satisfy require.
      local chunk = 'local c = require("clua"); io.write(tostring(c.getsubreap()), " ", '
        .. 'type(c.sweep))'
      ok, out = run(("LUA_CPATH=%s LUA_PATH=%s lua%s -e %s"):format(
        quote(tree .. "/lib/lua/" .. v .. "/?.so"),
        quote(tree .. "/share/lua/" .. v .. "/?.lua"), v, quote(chunk)))
      assert.is_true(ok, out)
      assert.equal("false function", out)

      -- watchoutput, clua-scope and clua-grabwait go into the tree's bin/,
      -- and run from there
      for _, tool in ipairs { "watchoutput", "clua-scope", "clua-grabwait" } do
        ok, out = run(quote(tree .. "/bin/" .. tool) .. " --version")
        assert.is_true(ok, out)
        assert.matches("^" .. tool:gsub("%-", "%%-") .. " ", out)
      end
    end)
  end
end)
