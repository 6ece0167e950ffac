--- A private copy of /etc for the timezone specs: a program run through
-- `etc:wrap()` sees the copy at /etc (a bind mount in a mount namespace of
-- its own), so a spec can change its /etc/localtime the ways
-- `timedatectl` and other tools do, while the machine's own /etc/localtime,
-- which everything else running here reads, is never touched.
--
--    local private_etc = require("support.private_etc")
--    local ok, why = private_etc.available()   -- root and unshare(1) needed
--    local etc = private_etc.new()             -- etc.dir: the copy
--    etc:link("Asia/Tokyo")                    -- a new symlink renamed over
--    os.execute(etc:wrap("date +%Z"))          --> JST
--    etc:remove()
--
-- The copy is an ordinary folder under /tmp, so the spec changes it
-- directly, at its own path: an inotify watch on /etc inside the namespace
-- is a watch on the same directory inode and sees the change the same way.
-- @module support.private_etc

local shell = require("support.shell")
local shq, run = shell.quote, shell.run

local private_etc = {}

local Etc = {}
Etc.__index = Etc

--- Whether this process can run a program in a mount namespace of its
-- own (root with CAP_SYS_ADMIN, and a `/` whose propagation can be changed:
-- not in a plain chroot).
-- @treturn boolean
-- @treturn string why not
function private_etc.available()
  local ok, out = run("unshare -m true")
  if not ok then return false, "unshare -m fails: " .. out end
  return true
end

--- Copies /etc into a fresh temporary folder.
-- @treturn table the copy: `dir` its /etc, `localtime` its /etc/localtime
function private_etc.new()
  local top = shell.mktemp_dir("clua-etc")
  local self = setmetatable({ top = top, dir = top .. "/etc" }, Etc)
  self.localtime = self.dir .. "/localtime"
  local ok, out = run("cp -a /etc " .. shq(self.dir))
  assert(ok, "copying /etc: " .. out)
  return self
end

--- A command prefix running the rest of the command line in a new mount
-- namespace with this copy at /etc; the namespace ends with the last
-- process in it.
function Etc:prefix()
  local script = "mount --bind " .. shq(self.dir) .. ' /etc && exec "$@"'
  return "unshare -m sh -c " .. shq(script) .. " sh"
end

--- Wraps a shell command line (run through `sh -c`) in `prefix`.
function Etc:wrap(cmd)
  return self:prefix() .. " sh -c " .. shq(cmd)
end

-- Runs `cmd` with a temporary name in the copy appended, and renames what
-- it made there over localtime: one rename(2), this process's own, so its
-- time can be taken right after.
local function replace(self, cmd)
  local tmp = self.dir .. "/.#localtime.clua"
  local ok, out = run(cmd .. " " .. shq(tmp))
  assert(ok, out)
  assert(os.rename(tmp, self.localtime))
end

--- Points localtime at the zone `name` the way timedatectl does: a
-- symlink under a temporary name, renamed over the old one, with the
-- relative target timedatectl writes.
function Etc:link(name)
  replace(self, "ln -sfn " .. shq("../usr/share/zoneinfo/" .. name))
end

--- Makes localtime a plain file holding zone `name`, replacing it by a
-- rename (a change in itself).
function Etc:copy(name)
  replace(self, "cp " .. shq("/usr/share/zoneinfo/" .. name))
end

--- Rewrites the plain file localtime in place with zone `name` (same
-- inode: truncated, written, closed), as some tools do.  Refuses a
-- symlink, which would write through to the zone file it points to.
function Etc:rewrite(name)
  local ok = run("test -L " .. shq(self.localtime))
  assert(not ok, "rewrite: " .. self.localtime .. " is a symlink")
  shell.write_file(self.localtime, assert(shell.read_file("/usr/share/zoneinfo/" .. name)))
end

--- What localtime is now: "link TARGET" or "file" and its bytes.
function Etc:state()
  local ok, target = run("readlink " .. shq(self.localtime))
  if ok then return "link " .. target end
  return "file", shell.read_file(self.localtime)
end

--- Removes the copy.
function Etc:remove()
  run("rm -rf " .. shq(self.top))
end

return private_etc
