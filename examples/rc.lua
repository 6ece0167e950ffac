-- A minimal Awesome 4.3 configuration using clua (see README, "Awesome").
-- Copy it to ~/.config/awesome/rc.lua, or merge the clua lines into yours.
pcall(require, "luarocks.loader")

local gears = require("gears")
local awful = require("awful")
require("awful.autofocus")
local wibox = require("wibox")
local beautiful = require("beautiful")
local naughty = require("naughty")

-- Errors at runtime (clua reports interrupted stalls this way too) become
-- notifications.
do
    local in_error = false
    awesome.connect_signal("debug::error", function(err)
        if in_error then return end
        in_error = true
        naughty.notify { preset = naughty.config.presets.critical,
                         title = "Oops, an error happened!", text = tostring(err) }
        in_error = false
    end)
end

-- clua: adopt orphans, follow wall-clock changes, feed the systemd
-- watchdog, interrupt runaway Lua after 10 s, start each application in a
-- systemd scope of its own, put every window back after a restart, and
-- start the user's sleep.target before every suspend (with a screen
-- locker installed, `sleep = { locker = { "i3lock", "-n" } }` also locks
-- the screen first).  Before the widgets are built, so every textclock is
-- refreshed on a clock change, and before anything is launched.
require("clua.awesome").setup { subreaper = true, clock = true, watchdog = true, stall = 10,
                                scopes = true, restore = true, sleep = true }

awesome.connect_signal("clua::clock_changed", function(change)
    if change.suspended > 1 then
        naughty.notify { title = "Welcome back",
                         text = string.format("suspended for %.0f s", change.suspended) }
    end
end)

beautiful.init(gears.filesystem.get_themes_dir() .. "default/theme.lua")

local terminal = "x-terminal-emulator"
local modkey = "Mod4"

awful.layout.layouts = { awful.layout.suit.tile, awful.layout.suit.floating }

awful.screen.connect_for_each_screen(function(s)
    awful.tag({ "1", "2", "3" }, s, awful.layout.layouts[1])
    s.mywibox = awful.wibar { position = "top", screen = s }
    s.mywibox:setup {
        layout = wibox.layout.align.horizontal,
        awful.widget.taglist(s, awful.widget.taglist.filter.all),
        awful.widget.tasklist(s, awful.widget.tasklist.filter.currenttags),
        wibox.widget.textclock(" %a %b %d, %H:%M:%S ", 1),
    }
end)

root.keys(gears.table.join(
    awful.key({ modkey }, "Return", function() awful.spawn(terminal) end),
    awful.key({ modkey, "Control" }, "r", awesome.restart),
    awful.key({ modkey, "Shift" }, "q", awesome.quit),
    awful.key({ modkey }, "j", function() awful.client.focus.byidx(1) end),
    awful.key({ modkey }, "k", function() awful.client.focus.byidx(-1) end)
))

local clientkeys = gears.table.join(
    awful.key({ modkey, "Shift" }, "c", function(c) c:kill() end)
)

awful.rules.rules = {
    { rule = {}, properties = {
        border_width = beautiful.border_width,
        border_color = beautiful.border_normal,
        focus = awful.client.focus.filter,
        keys = clientkeys,
        screen = awful.screen.preferred,
        placement = awful.placement.no_overlap + awful.placement.no_offscreen,
    } },
}
