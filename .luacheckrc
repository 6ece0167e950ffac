-- luacheck configuration: clua's Lua runs under 5.1-5.4 and LuaJIT, the
-- glue inside Awesome, whose C API provides these read-only globals.
std = "max"
max_line_length = 100
read_globals = {
  "awesome", "client", "screen", "tag", "mouse", "root",
  "mousegrabber", "keygrabber", "selection", "dbus",
}
files["spec"] = { std = "+busted" }
-- Snippets sent to Awesome with awesome-client are strings, not checked.
exclude_files = { "build/", "doc/" }
