--- Shared helpers for clua's benchmarks (bench/*.lua).
--
-- A benchmark row reports one line on stdout that bench/table.lua turns
-- into a row of the table:
--
--    RESULT<TAB>key=value<TAB>key=value...
--
-- keys: id, what (what is compared), unit, values (space-separated
-- numbers: one per paired run, or one per sample), stat (which statistic
-- the target applies to: min, median, mean, max, p99, sum), op (<= or >=),
-- target (a number), status (empty; "skipped: why" for what the machine
-- lacks; "failed: why" for a row that could not run, an input gone or not
-- built: bench/run then exits non-zero), how (a command anyone can rerun),
-- note.
--
-- Benchmarks, not tests: nothing here ever exits non-zero because a target
-- was missed.

local ptime = require("posix.time")

local lib = {}

--- The status of a row whose program or module is not built.
lib.NOT_BUILT = "failed: not built (make bench builds it)"

--- Seconds on CLOCK_MONOTONIC, as a float.
function lib.now()
  local t = ptime.clock_gettime(ptime.CLOCK_MONOTONIC)
  return t.tv_sec + t.tv_nsec * 1e-9
end

--- Sleeps `s` seconds.
function lib.sleep(s)
  local sec = math.floor(s)
  ptime.nanosleep { tv_sec = sec, tv_nsec = math.floor((s - sec) * 1e9) }
end

local shell = require("support.shell")
lib.shq = shell.quote
lib.readfile = shell.read_file
lib.writefile = shell.write_file
--- The state letter of a process and its parent pid (nil: no such process).
lib.proc_stat = shell.proc_stat

--- Runs a shell command; returns its stdout and whether it succeeded.
function lib.sh(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  local ok = p:close()
  return out, ok == true
end

--- A fresh temporary folder (mktemp -d).
function lib.tmpdir()
  return shell.mktemp_dir("clua-bench")
end

--- The root of the source tree and the build folders bench/run chose.
lib.root = os.getenv("CLUA_ROOT") or "."
lib.build = os.getenv("CLUA_BUILD") or (lib.root .. "/build/lua5.3")
lib.tools = os.getenv("CLUA_TOOLS") or (lib.root .. "/build/tools")
lib.benchbin = os.getenv("CLUA_BENCHBIN") or (lib.root .. "/build/bench")

--- Loads clua; returns the module, or nil and why.
function lib.clua()
  local ok, m = pcall(require, "clua")
  if not ok then return nil, tostring(m) end
  return m
end

--- Whether the loaded clua has every one of the named functions.
function lib.has(clua, ...)
  if not clua then return false end
  for _, name in ipairs { ... } do
    if clua[name] == nil then return false end
  end
  return true
end

--- Sorted copy.
local function sorted(values)
  local s = {}
  for i, v in ipairs(values) do s[i] = v end
  table.sort(s)
  return s
end

--- Percentile p (0..100) of values, nearest-rank.
function lib.percentile(values, p)
  local s = sorted(values)
  if #s == 0 then return nil end
  local rank = math.max(1, math.ceil(p / 100 * #s))
  return s[rank]
end

function lib.median(values)
  local s = sorted(values)
  local n = #s
  if n == 0 then return nil end
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

local KEYS = { "id", "what", "unit", "values", "stat", "op", "target", "status", "how", "note" }

--- Prints one RESULT line (see the header).  `r.values` is a Lua array.
function lib.result(r)
  local fields = { "RESULT" }
  for _, k in ipairs(KEYS) do
    local v = r[k]
    if k == "values" and type(v) == "table" then
      local parts = {}
      for i, x in ipairs(v) do parts[i] = string.format("%.6g", x) end
      v = table.concat(parts, " ")
    end
    if v ~= nil then
      fields[#fields + 1] = k .. "=" .. tostring(v):gsub("[\t\n]", " ")
    end
  end
  io.stdout:write(table.concat(fields, "\t"), "\n")
  io.stdout:flush()
end

--- Progress on stderr (the table goes to stdout).
function lib.log(fmt, ...)
  io.stderr:write("bench: ", string.format(fmt, ...), "\n")
  io.stderr:flush()
end

return lib
