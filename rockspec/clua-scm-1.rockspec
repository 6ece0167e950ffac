-- luarocks make rockspec/clua-scm-1.rockspec [--lua-version 5.x] [--tree DIR]
-- Builds clua.so through the Makefile (clua/*.c and common/*.c) and
-- installs it with the Lua glue in lua/clua/; builds the
-- watchoutput, clua-scope and clua-grabwait tools too and installs them
-- into the tree's
-- bin/ (the session's units and command are for make install, see README).
rockspec_format = "3.0"
package = "clua"
version = "scm-1"
source = {
  url = "git+https://github.com/clua/clua.git",
}
description = {
  summary = "Keep a Lua-configured window manager healthy on a systemd desktop",
  detailed = [[
    Child subreaper and zombie sweeping, wall-clock change detection
    (timerfd CANCEL_ON_SET), the systemd notify and watchdog protocol, and a
    breaker for runaway Lua loops, for Awesome and other Lua-configured
    window managers. Linux only.
  ]],
  labels = { "awesome", "systemd", "linux" },
  license = "MIT",
}
supported_platforms = { "linux" }
dependencies = {
  "lua >= 5.1, < 5.6",
}
external_dependencies = {
  LIBSYSTEMD = { header = "systemd/sd-daemon.h", library = "systemd" },
  LIBXCB = { header = "xcb/xcb.h", library = "xcb" },
}
build = {
  type = "make",
  build_target = "module tools",
  install_target = "install-module",
  variables = {
    CC = "$(CC)",
    CFLAGS = "$(CFLAGS)",
    LUA = "$(LUA)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    SD_CFLAGS = "-I$(LIBSYSTEMD_INCDIR)",
    SD_LIBS = "-L$(LIBSYSTEMD_LIBDIR) -lsystemd",
    XCB_CFLAGS = "-I$(LIBXCB_INCDIR)",
    XCB_LIBS = "-L$(LIBXCB_LIBDIR) -lxcb",
    -- A newer compiler's new warning must not break a user's install.
    WARNFLAGS = "-Wall -Wextra",
  },
  install_variables = {
    LUA_LIBDIR = "$(LIBDIR)",
    LUA_SHAREDIR = "$(LUADIR)",
  },
  install = {
    bin = {
      watchoutput = "build/tools/watchoutput",
      ["clua-scope"] = "build/tools/clua-scope",
      ["clua-grabwait"] = "build/tools/clua-grabwait",
    },
  },
}
