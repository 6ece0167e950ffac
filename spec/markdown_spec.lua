-- The Markdown files a user or contributor reads: every relative link
-- leads to a file of the tree (and to a heading, when it names one), every
-- `make` target they name exists, and the README stays short enough to read
-- in five minutes.
local shell = require("support.shell")

local root = os.getenv("CLUA_ROOT") or "."

-- The README's length limit: a user's page, the rest goes elsewhere.
local README_MAX_LINES = 350

-- The Markdown files of the tree (build output and git's own left out),
-- relative to the root.
local function markdown_files()
  local ok, out = shell.run(("cd %s && find . -name '*.md' -not -path './build/*' " ..
    "-not -path './.git/*' -not -path './debian/*/*'"):format(shell.quote(root)),
    { timeout = 30, what = "the Markdown files" })
  assert(ok, out)
  local files = {}
  for path in out:gmatch("[^\n]+") do files[#files + 1] = path:gsub("^%./", "") end
  table.sort(files)
  return files
end

local function exists(path)
  local f = io.open(root .. "/" .. path, "r")
  if f then f:close() return true end
  return false
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

-- The text without its fenced and indented code blocks, and the code
-- (blocks and `spans`) alone.
local function split_code(text)
  local prose, code = {}, {}
  local fenced = false
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    if line:match("^%s*```") then
      fenced = not fenced
    elseif fenced or line:match("^    ") then
      code[#code + 1] = line
    else
      prose[#prose + 1] = line
      for span in line:gmatch("`([^`]+)`") do code[#code + 1] = span end
    end
  end
  return table.concat(prose, "\n"), table.concat(code, "\n")
end

-- GitHub's anchor for a heading: lower case, punctuation but `-` and `_`
-- dropped, spaces turned into `-`.
local function anchor(heading)
  local a = heading:lower():gsub("[^%w%s%-_]", ""):gsub("%s", "-")
  return a
end

local function anchors_of(path)
  local set = {}
  local prose = split_code(assert(shell.read_file(root .. "/" .. path)))
  for heading in prose:gmatch("\n#+%s+([^\n]+)") do set[anchor(heading)] = true end
  local first = prose:match("^#+%s+([^\n]+)")
  if first then set[anchor(first)] = true end
  return set
end

-- Normalises `a/b/../c` and `./a` to `c` and `a`.
local function normalise(path)
  local parts = {}
  for part in path:gmatch("[^/]+") do
    if part == ".." then
      if #parts == 0 then return nil end
      parts[#parts] = nil
    elseif part ~= "." then
      parts[#parts + 1] = part
    end
  end
  return table.concat(parts, "/")
end

-- The broken relative links of `path`, as "text: why" lines.
local function broken_links(path)
  local text = assert(shell.read_file(root .. "/" .. path))
  local prose = split_code(text)
  local broken = {}
  for target in prose:gmatch("%]%(([^)%s]+)%)") do
    if not target:match("^%a[%w+.-]*:") then          -- http:, mailto: ...
      local file, frag = target:match("^([^#]*)#?(.*)$")
      local resolved = path
      if file ~= "" then resolved = normalise(dirname(path) .. "/" .. file) end
      if not resolved or not exists(resolved:gsub("/$", "")) then
        broken[#broken + 1] = target .. ": no such file"
      elseif frag ~= "" then
        if not resolved:match("%.md$") or not anchors_of(resolved)[frag] then
          broken[#broken + 1] = target .. ": no heading #" .. frag .. " in " .. resolved
        end
      end
    end
  end
  return broken
end

-- The Makefile's targets: every name before a `:` at the start of a rule
-- line (not `:=` or `::=` assignments).
local function make_targets()
  local targets = {}
  local text = assert(shell.read_file(root .. "/Makefile"))
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    local names = line:match("^([%w%-_%. ]+):[^=]") or line:match("^([%w%-_%. ]+):$")
    if names then
      for name in names:gmatch("%S+") do targets[name] = true end
    end
  end
  return targets
end

-- The targets `make` is asked for in the code of `text`: the words after
-- `make` up to a shell operator, leaving out options and assignments.
local function make_goals(code)
  local goals = {}
  for line in code:gmatch("[^\n]+") do
    for rest in (" " .. line):gmatch("[%s(]make%s+([^\n]*)") do
      rest = rest:gsub("[;&|#)].*$", "")
      local skip_arg = false
      for word in rest:gmatch("%S+") do
        if skip_arg then
          skip_arg = false
        elseif word == "-C" or word == "-f" then
          skip_arg = true
        elseif not word:match("^%-") and not word:match("=") and word:match("^[%w%-_]+$") then
          goals[#goals + 1] = word
        end
      end
    end
  end
  return goals
end

describe("the Markdown files #integration", function()
  local files = markdown_files()

  it("include the README and the guide for contributors", function()
    local seen = {}
    for _, f in ipairs(files) do seen[f] = true end
    assert.is_true(seen["README.md"], "README.md not found")
    assert.is_true(seen["HACKING.md"], "HACKING.md not found")
  end)

  it("keep README.md under " .. README_MAX_LINES .. " lines", function()
    local text = assert(shell.read_file(root .. "/README.md"))
    local _, lines = text:gsub("\n", "\n")
    assert(lines < README_MAX_LINES, ("README.md has %d lines"):format(lines))
  end)

  for _, path in ipairs(files) do
    it("link only to files and headings that exist: " .. path, function()
      local broken = broken_links(path)
      assert(#broken == 0, path .. ": " .. table.concat(broken, "; "))
    end)

    it("name only make targets the Makefile has: " .. path, function()
      local targets = make_targets()
      local _, code = split_code(assert(shell.read_file(root .. "/" .. path)))
      local missing = {}
      for _, goal in ipairs(make_goals(code)) do
        if not targets[goal] then missing[#missing + 1] = "make " .. goal end
      end
      assert(#missing == 0, path .. " names " .. table.concat(missing, ", "))
    end)
  end
end)
