-- luacheck configuration.  clua's Lua must run under every Lua it supports
-- (5.1 to 5.5 and LuaJIT): lint it against what they all have ("min"), as
-- Awesome does, plus the read-only globals of Awesome's C API, which the
-- glue runs inside.
std = "min"
max_line_length = 100
read_globals = {
  "awesome", "client", "screen", "tag", "mouse", "root",
  "mousegrabber", "keygrabber", "selection", "dbus", "drawin",
}
-- The unit specs run under every Lua too; where one Lua lacks a function
-- they test for it first (`loadstring or load`, `if jit then`).
files["spec"] = { std = "min+busted", read_globals = { "jit", "loadstring" } }
-- The harnesses of the integration specs, the benchmarks and the demo run
-- under Lua 5.3 only: Awesome on Debian is built against it, and so is
-- everything that drives or measures it.
-- (Every stage loads every spec file, so the harnesses must load under
-- 5.1 too: systemd.lua's `table.unpack or unpack`.)
files["spec/support"] = { std = "lua53", read_globals = { "unpack" } }
files["bench"] = { std = "lua53" }
files["demo"] = { std = "lua53" }
-- Snippets sent to Awesome with awesome-client are strings, not checked.
exclude_files = { "build/", "doc/" }
