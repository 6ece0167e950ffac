# clua - build, test and install.
#
#   make                     build clua.so (Lua $(LUA_VERSION)) and watchoutput
#   make check               install build deps (Debian), run the whole suite
#   make check-debian        make check in fresh Debian 12, 13, testing roots
#                            and a plain chroot, then check-login for 13 and
#                            testing (root, debootstrap; slow)
#   make check-login         the packages through a real login (LightDM,
#                            logind, cgroup v2) in a booted container of this
#                            release (root; RELEASES="trixie forky" for others)
#   make test LUA_VERSION=5.4   the unit specs under one Lua
#   make install PREFIX=/usr/local DESTDIR=
#   make bench               build, then run the benchmarks (bench/README.md)
#
# LUA_VERSION is 5.1, 5.2, 5.3, 5.4, 5.5 or jit (LuaJIT).

LUA_VERSION ?= 5.3
PREFIX      ?= /usr/local
DESTDIR     ?=

ifeq ($(LUA_VERSION),jit)
LUA_PC      := luajit
LUA         := luajit
LUA_ABI     := 5.1
else
LUA_PC      := lua$(LUA_VERSION)
LUA         := lua$(LUA_VERSION)
LUA_ABI     := $(LUA_VERSION)
endif

PKG_CONFIG  ?= pkg-config
CC          ?= cc
LUA_CFLAGS  := $(shell $(PKG_CONFIG) --cflags $(LUA_PC) 2>/dev/null)
SD_CFLAGS   := $(shell $(PKG_CONFIG) --cflags libsystemd 2>/dev/null)
SD_LIBS     := $(shell $(PKG_CONFIG) --libs libsystemd 2>/dev/null || echo -lsystemd)
XCB_CFLAGS  := $(shell $(PKG_CONFIG) --cflags xcb 2>/dev/null)
XCB_LIBS    := $(shell $(PKG_CONFIG) --libs xcb 2>/dev/null || echo -lxcb)

# SANITIZE=asan builds with AddressSanitizer + UndefinedBehaviorSanitizer;
# SANITIZE=tsan with ThreadSanitizer (the stall breaker's watcher thread).
SANITIZE    ?=
OPTFLAGS    ?= -O2 -g
WARNFLAGS   := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
ifeq ($(SANITIZE),asan)
SANFLAGS    := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
BUILD       := build/$(LUA_PC)-asan
TOOLS_DIR   := build/tools-asan
else ifeq ($(SANITIZE),tsan)
SANFLAGS    := -fsanitize=thread -fno-omit-frame-pointer
BUILD       := build/$(LUA_PC)-tsan
TOOLS_DIR   := build/tools-tsan
else
SANFLAGS    :=
BUILD       := build/$(LUA_PC)
TOOLS_DIR   := build/tools
endif

# luarocks' make backend (rockspec/clua-scm-1.rockspec) passes the
# interpreter it builds for as LUA and that Lua's headers as LUA_INCDIR:
# build against those, in a folder of that interpreter's own.
ifeq ($(origin LUA_INCDIR),command line)
LUA_CFLAGS  := -I$(LUA_INCDIR)
LUA_ABI     := $(shell $(LUA) -e 'io.write((_VERSION:gsub("^Lua ", "")))')
BUILD       := build/rock-$(notdir $(LUA))
endif

ALL_CFLAGS  := -std=gnu99 -D_GNU_SOURCE -fPIC -fvisibility=hidden $(OPTFLAGS) $(WARNFLAGS) $(SANFLAGS) $(CFLAGS)
ALL_LDFLAGS := $(SANFLAGS) $(LDFLAGS)
VERSION     := $(shell sed -n 's/^\#define CLUA_VERSION "\(.*\)"/\1/p' clua/clua.h)
TOOL_CFLAGS := -std=gnu99 -D_GNU_SOURCE -fvisibility=hidden $(OPTFLAGS) $(WARNFLAGS) $(SANFLAGS) \
	-DCLUA_VERSION='"$(VERSION)"' -Icommon $(CFLAGS)

# The layout: clua/ is the Lua module, one C file per concern; tools/ the
# command-line programs, one C file and one man page each; common/ the
# plain C both use (the service manager's notify datagram).
MODULE_SRCS  := $(wildcard clua/*.c) $(wildcard common/*.c)
MODULE_OBJS  := $(patsubst %.c,$(BUILD)/%.o,$(notdir $(MODULE_SRCS)))
HEADERS      := $(wildcard clua/*.h common/*.h)
TOOLS        := $(patsubst tools/%.c,%,$(wildcard tools/*.c))
COMMON_SRCS  := $(wildcard common/*.c)
vpath %.c clua common

LUA_LIBDIR   := $(PREFIX)/lib/lua/$(LUA_ABI)
LUA_SHAREDIR := $(PREFIX)/share/lua/$(LUA_ABI)
LUA_MODULES  := $(wildcard lua/clua/*.lua)
# systemd's user units below $(PREFIX) (/usr/lib/systemd/user for
# PREFIX=/usr; the user manager also reads /usr/local/lib/systemd/user).
USERUNITDIR  ?= $(PREFIX)/lib/systemd/user
XSESSIONSDIR ?= $(PREFIX)/share/xsessions
SESSION_UNITS := session/awesome.service session/awesome-session.target \
	session/awesome-session-shutdown.target session/sleep.target

.PHONY: all module testkit tools print-build demo doc check check-debian check-login test deps install install-module \
	install-tools install-session uninstall clean \
	bench bench-deps bench-progs

all: module tools

module: $(BUILD)/clua.so

# Test scaffolding (spec/support/testkit.c): built beside clua.so, never
# installed.
testkit: $(BUILD)/testkit.so

$(BUILD)/testkit.so: spec/support/testkit.c $(BUILD)/util.o $(BUILD)/compat.o $(HEADERS)
	$(CC) -shared $(ALL_CFLAGS) $(LUA_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(BUILD)/util.o $(BUILD)/compat.o

$(BUILD)/%.o: %.c $(HEADERS)
	@mkdir -p $(BUILD)
	$(CC) $(ALL_CFLAGS) -Icommon $(LUA_CFLAGS) $(SD_CFLAGS) -c -o $@ $<

$(BUILD)/clua.so: $(MODULE_OBJS)
	$(CC) -shared $(ALL_LDFLAGS) -o $@ $(MODULE_OBJS) $(SD_LIBS) -lpthread -ldl

# The unit specs under one Lua (make test LUA_VERSION=5.4 SANITIZE=asan).
test: module testkit
	spec/support/run-busted $(LUA) $(BUILD) --exclude-tags=integration,load

# The folder this configuration builds into, for scripts.
print-build:
	@echo $(BUILD)

# The command-line programs (tools/): watchoutput, a program's output as
# its watchdog heartbeat; clua-scope, which clua.awesome starts each
# application through so that it runs in a systemd scope of its own; and
# clua-grabwait, which tells clua.awesome that the screen locker holds the
# keyboard before a suspend goes on.  Each is one C file linked with
# common/, built apart from the module; clua-grabwait is an X client
# (libxcb).
tools: $(TOOLS:%=$(TOOLS_DIR)/%)

$(TOOLS_DIR)/clua-grabwait: TOOL_XCFLAGS := $(XCB_CFLAGS)
$(TOOLS_DIR)/clua-grabwait: TOOL_XLIBS := $(XCB_LIBS)

$(TOOLS_DIR)/%: tools/%.c $(COMMON_SRCS) $(wildcard common/*.h)
	@mkdir -p $(TOOLS_DIR)
	$(CC) $(TOOL_CFLAGS) $(SD_CFLAGS) $(TOOL_XCFLAGS) $(ALL_LDFLAGS) -o $@ $< $(COMMON_SRCS) \
		$(SD_LIBS) $(TOOL_XLIBS) -lm

deps:
	@sh .ci/deps

# A headless Awesome with examples/rc.lua under a private systemd --user
# manager, showing each feature (root: namespace and clock). Awesome on
# Debian 12 is built against Lua 5.3.
demo: deps
	$(MAKE) -s module testkit tools LUA_VERSION=5.3 SANITIZE=
	CLUA_ROOT=$(CURDIR) CLUA_BUILD=$(CURDIR)/build/lua5.3 \
	LUA_PATH="$(CURDIR)/spec/?.lua;;" LUA_CPATH="$(CURDIR)/build/lua5.3/?.so;;" \
		lua5.3 demo/demo.lua

# The API reference, from the LDoc comments in clua/*.c and lua/clua/*.lua,
# into doc/ (LDOCFLAGS="-d DIR" elsewhere). LDOC is LDoc's script, found on
# PATH unless given. LDOC_LUA runs it rather than its own first line:
# Debian's ldoc starts with `#!/usr/bin/env lua-any` and `Lua-Versions: 5.2
# 5.1`, which picks Lua 5.2 when it is installed, while lua-markdown, which
# turns the comments' markdown into HTML, is packaged for Lua 5.1 only.
LDOC        ?= $(shell command -v ldoc)
LDOC_LUA    ?= lua5.1
LDOCFLAGS   ?=

doc:
	@test -n "$(LDOC)" || { echo "make doc: ldoc not found on PATH (install lua-ldoc, or give LDOC=/path/to/ldoc)" >&2; exit 1; }
	$(LDOC_LUA) $(LDOC) $(LDOCFLAGS) .

check: deps
	@spec/support/check

# The releases the README names, each a fresh minimal root running the
# README's `make check` (.ci/debian-root): Debian 12, 13 and testing, and
# Debian 12 in a plain chroot as package builders use. One line per root.
# Not part of `make check`: each root installs every package first, and the
# four take an hour or more. A root whose systemd cannot run a user manager
# on this machine (systemd >= 258 on cgroup v1, a plain chroot) runs the
# integration stage booted as a container instead (.ci/debian-root). Then
# check-login for the releases other than the one `.ci/run` covers.
DEBIAN_ROOTS ?= bookworm trixie forky bookworm:plain
LOGIN_RELEASES ?= trixie forky

check-debian:
	@s=0; .ci/debian-root $(DEBIAN_ROOTS) || s=1; \
	.ci/check-login $(LOGIN_RELEASES) || s=1; exit $$s

# The Debian packages (make deb) installed with apt in a fresh root of a
# release, booted with systemd as PID 1 on cgroup v2, where LightDM logs a
# user in with the packaged session: .ci/check-login, then .ci/login-test
# inside. RELEASES: this machine's release when empty. Root; about 2
# minutes a release, 1 once its root is cached (/var/cache/clua/login).
RELEASES ?=

check-login:
	@.ci/check-login $(RELEASES)

# Benchmarks: clua against what people would otherwise use, one table
# (bench/README.md).  Never part of `make check`, never a failure: a missed
# target shows in the table.  bench-deps installs the anchors (lua-posix,
# lua-systemd) and tools beyond .ci/deps; Awesome runs Lua 5.3, so the
# module is built for 5.3 whatever LUA_VERSION says.
BENCH_BIN   := build/bench
BENCH_PROGS := $(BENCH_BIN)/reap_c $(BENCH_BIN)/notify_sink $(BENCH_BIN)/clock_poke \
	$(BENCH_BIN)/spawn_probe

bench-deps: deps
	@sh bench/deps

bench: bench-deps
	$(MAKE) module testkit tools LUA_VERSION=5.3 SANITIZE=
	$(MAKE) bench-progs
	bench/run

bench-progs: $(BENCH_PROGS)

$(BENCH_BIN)/%: bench/%.c
	@mkdir -p $(BENCH_BIN)
	$(CC) -std=gnu99 -D_GNU_SOURCE -O2 $(WARNFLAGS) $(CFLAGS) -o $@ $<

install: install-module install-tools install-session

# The rockspec installs the module with this target, and watchoutput with
# its own build.install.bin (into the rock tree, never into $(PREFIX)).
install-module: module
	install -d $(DESTDIR)$(LUA_LIBDIR)
	install -m 755 $(BUILD)/clua.so $(DESTDIR)$(LUA_LIBDIR)/clua.so
ifneq ($(LUA_MODULES),)
	install -d $(DESTDIR)$(LUA_SHAREDIR)/clua
	install -m 644 $(LUA_MODULES) $(DESTDIR)$(LUA_SHAREDIR)/clua/
endif

install-tools: tools
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 755 $(TOOLS:%=$(TOOLS_DIR)/%) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(TOOLS:%=tools/%.1) $(DESTDIR)$(PREFIX)/share/man/man1/

# The Awesome session (session/): the user units, the session command and
# its man page, and the display managers' xsessions entry.
install-session:
	install -d $(DESTDIR)$(USERUNITDIR) $(DESTDIR)$(PREFIX)/bin \
		$(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(XSESSIONSDIR)
	install -m 644 $(SESSION_UNITS) $(DESTDIR)$(USERUNITDIR)/
	install -m 755 session/awesome-session $(DESTDIR)$(PREFIX)/bin/awesome-session
	install -m 644 session/awesome-session.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 644 session/awesome-session.desktop $(DESTDIR)$(XSESSIONSDIR)/

uninstall:
	rm -f $(TOOLS:%=$(DESTDIR)$(PREFIX)/bin/%) $(TOOLS:%=$(DESTDIR)$(PREFIX)/share/man/man1/%.1)
	rm -f $(DESTDIR)$(PREFIX)/bin/awesome-session $(DESTDIR)$(PREFIX)/share/man/man1/awesome-session.1
	rm -f $(addprefix $(DESTDIR)$(USERUNITDIR)/,$(notdir $(SESSION_UNITS)))
	rm -f $(DESTDIR)$(XSESSIONSDIR)/awesome-session.desktop
	rm -f $(DESTDIR)$(LUA_LIBDIR)/clua.so
	rm -rf $(DESTDIR)$(LUA_SHAREDIR)/clua

# Debian packages (debian/; README "Debian packages"): `make deb` builds
# lua-clua, watchoutput and awesome-session for this machine's release into
# build/deb/; `make check-deb` builds and tests them in fresh roots of
# Debian 12, 13 and testing (root, debootstrap; slow, not part of `make
# check`; DEB_SUITES picks releases).
DEB_SUITES ?= bookworm trixie forky
.PHONY: deb check-deb

deb:
	@.ci/deb

check-deb:
	@.ci/check-deb $(DEB_SUITES)

clean:
	rm -rf build
