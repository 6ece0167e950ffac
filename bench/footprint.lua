--- Row 6 (a, b): the size on disk of clua.so and watchoutput, stripped
-- (strip -o a copy; the build keeps -g).  6c, the RSS that setup{} adds to
-- Awesome, is measured in row 3's Awesome sessions (bench/idle.lua).
--
--    lua5.3 bench/footprint.lua

local lib = require("bench.lib")

local how = "strip -o T FILE; stat -c %s T (bench/run 6)"

-- A path as the reader would type it, from the top of the tree.
local function rel(path)
  local r = lib.root:gsub("%p", "%%%0")
  return (path:gsub("^" .. r .. "/", ""))
end

local function stripped(path)
  if not lib.readfile(path) then return nil end
  local dir = lib.tmpdir()
  local out, ok = lib.sh("strip -o " .. lib.shq(dir .. "/s") .. " " .. lib.shq(path) ..
    " && stat -c %s " .. lib.shq(dir .. "/s"))
  lib.sh("rm -rf " .. lib.shq(dir))
  return ok and tonumber(out) / 1024 or nil
end

-- For scale: the stripped size of the anchors' shared objects.
local function anchors()
  local out = lib.sh("ls /usr/lib/*/lua/5.3/posix.so /usr/lib/*/lua/5.3/systemd.so 2>/dev/null")
  local parts = {}
  for path in out:gmatch("%S+") do
    local k = stripped(path)
    if k then
      parts[#parts + 1] = string.format("%s %.1f KiB", path:match("lua/5%.3/(.*)"), k)
    end
  end
  return #parts > 0 and ("for scale, the anchors stripped: " .. table.concat(parts, ", ")) or nil
end

local so = stripped(lib.build .. "/clua.so")
lib.result { id = "6a", what = "clua.so size, stripped", unit = "KiB", values = so and { so },
  status = not so and lib.NOT_BUILT or nil, how = how .. ": " .. rel(lib.build .. "/clua.so"),
  note = anchors() }
local wo = stripped(lib.tools .. "/watchoutput")
lib.result { id = "6b", what = "watchoutput size, stripped", unit = "KiB",
  values = wo and { wo }, status = not wo and lib.NOT_BUILT or nil,
  how = how .. ": " .. rel(lib.tools .. "/watchoutput") }
