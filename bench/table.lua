--- Prints the benchmark table from the RESULT lines (see bench/lib.lua)
-- found in the files given as arguments, in the order found.
--
--    lua5.3 bench/table.lua RESULTS...

local lib = require("bench.lib")

local rows = {}
for _, path in ipairs(arg) do
  for line in io.lines(path) do
    if line:match("^RESULT\t") then
      local r = {}
      for k, v in line:gmatch("\t([%w_]+)=([^\t]*)") do r[k] = v end
      local values = {}
      for x in (r.values or ""):gmatch("%S+") do values[#values + 1] = tonumber(x) end
      r.values = values
      rows[#rows + 1] = r
    end
  end
end

-- By row id (stable: the order found breaks ties).
for i, r in ipairs(rows) do r.order = i end
table.sort(rows, function(a, b)
  if a.id ~= b.id then return tostring(a.id) < tostring(b.id) end
  return a.order < b.order
end)

local function num(x)
  if x == nil then return "-" end
  local a = math.abs(x)
  if a == 0 then return "0" end
  if a >= 1000 then return string.format("%.0f", x) end
  if a >= 10 then return string.format("%.1f", x) end
  if a >= 0.01 then return string.format("%.3f", x) end
  return string.format("%.2e", x)
end

local function stat(values, which)
  if #values == 0 then return nil end
  if which == "min" then return lib.percentile(values, 0) end
  if which == "max" then return lib.percentile(values, 100) end
  if which == "p99" then return lib.percentile(values, 99) end
  if which == "mean" then
    local s = 0
    for _, v in ipairs(values) do s = s + v end
    return s / #values
  end
  if which == "sum" then
    local s = 0
    for _, v in ipairs(values) do s = s + v end
    return s
  end
  return lib.median(values)
end

local header = { "row", "compared", "unit", "n", "min", "median", "max", "target", "met" }
local out = { header }
for _, r in ipairs(rows) do
  local v = r.values
  -- A target on another statistic than the median shows that statistic's
  -- value too: "p99 275 <= 10000".
  local target = "-"
  if r.op == "" then r.op = nil end
  if r.target == "" then r.target = nil end
  if r.op and r.target then
    target = r.op .. " " .. r.target
    if r.stat and r.stat ~= "median" then
      local measured = #v > 0 and not (r.status and r.status ~= "")
      target = r.stat .. (measured and (" " .. num(stat(v, r.stat))) or "") .. " " .. target
    end
  end
  local met
  if r.status and r.status ~= "" then
    out[#out + 1] = { r.id, r.what, r.unit or "", "0", r.status, "", "", target, "-" }
  else
    local s = stat(v, r.stat or "median")
    if s == nil or not r.op then
      met = "-"
    elseif r.op == "<=" then
      met = s <= tonumber(r.target) and "yes" or "NO"
    else
      met = s >= tonumber(r.target) and "yes" or "NO"
    end
    out[#out + 1] = { r.id, r.what, r.unit or "", tostring(#v), num(stat(v, "min")),
      num(stat(v, "median")), num(stat(v, "max")), target, met }
  end
end

-- Column widths; a status text spans the min/median/max columns.
local width = {}
for _, row in ipairs(out) do
  for i, cell in ipairs(row) do
    if not (i == 5 and row[6] == "" and row ~= header) then
      width[i] = math.max(width[i] or 0, #cell)
    end
  end
end
local function line(row)
  local cells = {}
  for i, cell in ipairs(row) do
    if i == 5 and row[6] == "" and row ~= header then
      local span = width[5] + width[6] + width[7] + 4
      cells[#cells + 1] = cell .. string.rep(" ", math.max(0, span - #cell))
    elseif not ((i == 6 or i == 7) and row[6] == "" and row ~= header) then
      cells[#cells + 1] = cell .. string.rep(" ", width[i] - #cell)
    end
  end
  return (table.concat(cells, "  "):gsub("%s+$", ""))
end
print(line(out[1]))
local rule = {}
for i = 1, #header do rule[i] = string.rep("-", width[i]) end
print(line(rule))
for i = 2, #out do print(line(out[i])) end

print()
print("How each row was measured (n = paired runs or samples; targets apply to the median")
print("unless the target column names another statistic):")
local seen_how, seen_note = {}, {}
for _, r in ipairs(rows) do
  local how = r.how and r.how ~= "" and not seen_how[r.how]
  local note = r.note and r.note ~= "" and not seen_note[r.note]
  if how or note then
    print(string.format("  %-3s %s", r.id, how and r.how or "(as above)"))
    if note then print("      " .. r.note) end
  end
  if how then seen_how[r.how] = true end
  if note then seen_note[r.note] = true end
end
