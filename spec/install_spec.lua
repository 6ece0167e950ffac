-- `make install PREFIX=... DESTDIR=...` puts clua where require finds it.
local shell = require("support.shell")
local quote, run = shell.quote, shell.run

local root = os.getenv("CLUA_ROOT") or "."


describe("make install #integration", function()
  local tmp

  before_each(function() tmp = shell.mktemp_dir("clua-install") end)
  after_each(function() run("rm -rf " .. quote(tmp)) end)

  for _, v in ipairs({ "5.3", "5.4" }) do
    it("installs clua.so and lua/clua/*.lua under DESTDIR/PREFIX for Lua " .. v, function()
      local ok, out = run(("make -s -C %s install LUA_VERSION=%s PREFIX=/opt/clua DESTDIR=%s")
        :format(quote(root), v, quote(tmp)), { timeout = 300, what = "make install" })
      assert.is_true(ok, out)
      local prefix = tmp .. "/opt/clua"
      assert.is_true(run("test -x " .. quote(prefix .. "/lib/lua/" .. v .. "/clua.so")))
      local _, list = run("cd " .. quote(root) .. " && ls lua/clua/*.lua 2>/dev/null")
      assert.is_truthy(list:find("%.lua"), "no lua/clua/*.lua to check")
      for file in list:gmatch("[^\n]+") do
        local installed = prefix .. "/share/lua/" .. v .. "/clua/" .. file:match("[^/]+$")
        assert.is_true(run("cmp " .. quote(root .. "/" .. file) .. " " .. quote(installed)),
          file .. " installed")
      end

      local chunk = 'io.write(tostring(require("clua").getsubreap()))'
      ok, out = run(("LUA_CPATH=%s LUA_PATH=%s lua%s -e %s"):format(
        quote(prefix .. "/lib/lua/" .. v .. "/?.so"),
        quote(prefix .. "/share/lua/" .. v .. "/?.lua"), v, quote(chunk)))
      assert.is_true(ok, out)
      assert.equal("false", out)

      -- The tools and the session, with their man pages and the units.
      local files = {
        "bin/watchoutput", "bin/clua-scope", "bin/clua-grabwait", "bin/awesome-session",
        "share/man/man1/watchoutput.1", "share/man/man1/clua-scope.1",
        "share/man/man1/clua-grabwait.1", "share/man/man1/awesome-session.1",
        "lib/systemd/user/awesome.service", "lib/systemd/user/awesome-session.target",
        "lib/systemd/user/awesome-session-shutdown.target", "lib/systemd/user/sleep.target",
        "share/xsessions/awesome-session.desktop",
      }
      for _, file in ipairs(files) do
        assert.is_true(run("test -f " .. quote(prefix .. "/" .. file)), file .. " installed")
      end
      for _, file in ipairs { "bin/watchoutput", "bin/clua-scope", "bin/clua-grabwait",
                              "bin/awesome-session" } do
        assert.is_true(run("test -x " .. quote(prefix .. "/" .. file)), file .. " executable")
      end

      ok, out = run(("make -s -C %s uninstall LUA_VERSION=%s PREFIX=/opt/clua DESTDIR=%s")
        :format(quote(root), v, quote(tmp)), { timeout = 120, what = "make uninstall" })
      assert.is_true(ok, out)
      -- Nothing left but folders.
      local _, left = run("find " .. quote(tmp) .. " ! -type d")
      assert.equal("", left)
    end)
  end
end)
