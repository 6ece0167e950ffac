-- The unit files in examples/ are what users copy: each must pass
-- `systemd-analyze verify` (system units) or `systemd-analyze --user verify`
-- (user units) with no warning at all.
local shell = require("support.shell")
local run = shell.run

local root = os.getenv("CLUA_ROOT") or "."
local tools = os.getenv("CLUA_TOOLS") or (root .. "/build/tools")

-- System units; every other unit in examples/ is a user unit.
local system_units = { ["user-sleep@.service"] = "user-sleep@1000.service" }

-- verify checks that ExecStart programs exist. The units name where they
-- are installed; point those at what this machine has instead: the built
-- watchoutput, and /bin/true for a wrapped daemon that is not installed.
local function localise(text)
  text = text:gsub("/usr/local/bin/watchoutput", tools .. "/watchoutput")
             :gsub("/usr/bin/watchoutput", tools .. "/watchoutput")
  return (text:gsub("/usr/bin/offlineimap", "/bin/true"))
end

local function units()
  local _, out = run("cd " .. root .. "/examples && ls *.service *.target 2>/dev/null")
  local list = {}
  for name in out:gmatch("[^\n]+") do list[#list + 1] = name end
  return list
end

describe("examples/ unit files #integration", function()
  -- Unit files that went missing fail, not vanish from the count.
  if #units() == 0 then
    it("examples/ holds unit files", function()
      error("no *.service or *.target in " .. root .. "/examples")
    end)
  end
  for _, name in ipairs(units()) do
    it(name .. " passes systemd-analyze verify without a warning", function()
      local dir = shell.mktemp_dir("clua-verify")
      local text = localise(assert(shell.read_file(root .. "/examples/" .. name)))
      local target = system_units[name] or name
      shell.write_file(dir .. "/" .. target, text)
      local cmd
      if system_units[name] then
        cmd = ("cd %s && systemd-analyze verify ./%s"):format(dir, target)
      else
        cmd = ("cd %s && XDG_RUNTIME_DIR=%s systemd-analyze --user verify ./%s")
          :format(dir, dir, target)
      end
      local ok, output = run(cmd)
      run("rm -rf " .. shell.quote(dir))
      assert.is_true(ok, output)
      assert.are.equal("", output)
    end)
  end
end)
