-- watchoutput (tools/watchoutput.c) run for real: its output relay, retry
-- logic, signals, exit codes and environment; then under a real systemd
-- user manager (spec/support/systemd.lua) its watchdog heartbeat.
--
-- The binary is $CLUA_TOOLS/watchoutput; point CLUA_TOOLS at
-- build/tools-asan to run these against the ASan+UBSan build.
--
-- Each test gets a fresh folder ($T) and its scripts run under a time
-- limit (60 s unless told); a wait inside a script (wait_until, wait_pid
-- below) that runs out ends it, and the test fails with "timed out after N
-- s waiting for WHAT".  Nothing a script starts outlives it.

local tools = os.getenv("CLUA_TOOLS") or "build/tools"
local W = tools .. "/watchoutput"

local shell = require("support.shell")
local q, slurp, spit = shell.quote, shell.read_file, shell.write_file

local tmp
local function path(name) return tmp .. "/" .. name end

-- What every script starts with: $W, $T, and waits with a limit.
local PRELUDE = [[
W=%s
T=%s
# timed_out SECONDS WHAT: ends the script, saying what it waited for.
timed_out() { echo "timed out after $1 s waiting for $2" >&2; exit 124; }
# wait_until SECONDS WHAT COMMAND...: COMMAND every 0.05 s until it succeeds.
wait_until() {
	local limit=$1 what=$2 i=0
	shift 2
	until "$@" >/dev/null; do
		i=$((i + 1))
		[ "$i" -le $((limit * 20)) ] || timed_out "$limit" "$what"
		sleep 0.05
	done
}
gone() { ! kill -0 "$1" 2>/dev/null || grep -q ') Z ' "/proc/$1/stat" 2>/dev/null; }
# wait_pid SECONDS PID: `wait PID`, for at most SECONDS; its exit status.
wait_pid() {
	wait_until "$1" "pid $2 to exit" gone "$2"
	wait "$2"
}
# Nothing started here outlives the script, on a failure either: its jobs
# (process groups, under set -m) are killed when it exits, also when the
# time limit's SIGTERM ends it.
cleanup() {
	for j in $(jobs -p); do kill -KILL -- "-$j" 2>/dev/null || kill -KILL "$j" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 143' TERM
]]

-- run(script[, limit]) runs a bash script (after PRELUDE) for at most
-- `limit` seconds (default 60); returns exit code, stdout, stderr.  A wait
-- inside it that ran out fails the test with its message.
local function run(script, limit)
  spit(path("script.sh"), PRELUDE:format(q(W), q(tmp)) .. script)
  local _, _, code = shell.run("bash " .. q(path("script.sh")) .. " >" .. q(path("out"))
    .. " 2>" .. q(path("err")),
    { timeout = limit or 60, what = "the script " .. path("script.sh") })
  local out, err = slurp(path("out")) or "", slurp(path("err")) or ""
  local timed = err:match("timed out after [^\n]*")
  if timed then error(timed .. "\n--- its stderr ---\n" .. err, 2) end
  return code, out, err
end

local function lines(s)
  local t = {}
  for l in s:gmatch("([^\n]*)\n") do t[#t + 1] = l end
  return t
end

local function have(prog)
  return (shell.run("command -v " .. prog))
end

describe("watchoutput #integration", function()
  setup(function()
    assert(shell.run("test -x " .. q(W)), W .. " is not built (make tools)")
  end)
  before_each(function()
    tmp = shell.mktemp_dir("clua-watchoutput")
  end)
  after_each(function()
    if tmp then shell.run("rm -rf " .. q(tmp)) end
    tmp = nil
  end)

  describe("relays output", function()
    -- The script ran to the end and printed three lines, all the same (the
    -- checksums of the input and of what watchoutput relayed).
    local function same_three(code, out)
      assert.equal(0, code)
      local l = lines(out)
      assert.equal(3, #l)
      assert.equal(l[1], l[2])
      assert.equal(l[1], l[3])
    end

    it("passes seq 1 200000 through byte-identical, into a pipe and into a file", function()
      local code, out = run([[
        seq 1 200000 | md5sum
        "$W" seq 1 200000 | md5sum
        "$W" seq 1 200000 >"$T/seq.txt"; md5sum <"$T/seq.txt"
      ]])
      same_three(code, out)
    end)

    it("passes 50 MB of random binary data through byte-identical", function()
      local code, out = run([[
        head -c 50M /dev/urandom >"$T/random"
        md5sum <"$T/random"
        "$W" cat "$T/random" | md5sum
        "$W" cat "$T/random" >"$T/random.out"; md5sum <"$T/random.out"
        rm -f "$T/random" "$T/random.out"
      ]])
      same_three(code, out)
    end)

    it("keeps stdout on stdout and stderr on stderr, with and without --ignore-stderr", function()
      local code, out, err = run([[
        "$W" sh -c 'echo to-out; echo to-err >&2'
        "$W" --ignore-stderr sh -c 'echo to-out2; echo to-err2 >&2'
      ]])
      assert.equal(0, code)
      assert.equal("to-out\nto-out2\n", out)
      assert.equal("to-err\nto-err2\n", err)
    end)

    it("relays the last bytes a child writes just before it dies", function()
      local code, out = run([[
        "$W" sh -c 'seq 1 50000; printf last-words; kill -9 $$'
        echo " rc=$?"
      ]])
      assert.equal(0, code)
      assert.truthy(out:find("\n50000\nlast%-words rc=137\n$"))
    end)

    it("exits with the child, not with a grandchild that keeps its output open", function()
      -- The grandchild lives 10 s: exiting within 5 s (starting included,
      -- on a busy machine) is exiting with the child.
      local code, out = run([[
        start=$(cut -d" " -f1 /proc/uptime | tr -d .)
        "$W" sh -c 'sleep 10.0417 & echo done; exit 5'
        echo "rc=$? ms=$((($(cut -d" " -f1 /proc/uptime | tr -d .) - start) * 10))"
        pkill -f 'sleep 10[.]0417'
        :
      ]])
      assert.equal(0, code)
      local rc, ms = out:match("^done\nrc=(%d+) ms=(%d+)\n$")
      assert.equal("5", rc, out)
      assert.is_true(tonumber(ms) < 5000, out)
    end)

    it("passes a vanished reader on: watchoutput yes | head -2 ends with 128+13", function()
      local code, out = run([[
        timeout 10 "$W" yes | head -2
        echo "rc=${PIPESTATUS[0]}"
      ]])
      assert.equal(0, code)
      assert.equal("y\ny\nrc=141\n", out)
    end)

    it("stops option parsing at the command: watchoutput echo --help -h runs echo", function()
      local code, out = run([["$W" echo --help -h]])
      assert.equal(0, code)
      assert.equal("--help -h\n", out)
    end)
  end)

  describe("retries", function()
    it("runs a command that exits 3 again after 1 s, and stops after --max-retries", function()
      local code, out, err = run([[
        "$W" --retry-on-exit 3 --wait-before-retry 1 --max-retries 2 -- \
          sh -c 'cut -d" " -f1 /proc/uptime; exit 3'
      ]])
      assert.equal(3, code)
      local t = lines(out)
      assert.equal(3, #t)	-- the first run and two retries
      for i = 2, 3 do
        local gap = tonumber(t[i]) - tonumber(t[i - 1])
        -- /proc/uptime: monotonic (other jobs step the wall clock), 10 ms steps
        assert.is_true(gap >= 0.99, "retry came after " .. gap .. " s")
      end
      assert.truthy(err:find("retry 2 of 2"))
    end)

    it("ends with any other code at once", function()
      local code, out = run([[
        "$W" --retry-on-exit 3,5 --wait-before-retry 0 -- sh -c 'echo run; exit 4'
      ]])
      assert.equal(4, code)
      assert.equal("run\n", out)
    end)

    it("retries a child killed by SIGKILL with --retry-on-exit -9", function()
      local code, out = run([[
        "$W" --retry-on-exit 2,-9 --wait-before-retry 0 --max-retries 2 -- \
          sh -c 'echo run; kill -9 $$'
      ]])
      assert.equal(137, code)
      assert.equal("run\nrun\nrun\n", out)
    end)

    it("does not retry a child killed by another signal", function()
      local code, out = run([[
        "$W" --retry-on-exit -9 --wait-before-retry 0 -- sh -c 'echo run; kill -TERM $$'
      ]])
      assert.equal(143, code)
      assert.equal("run\n", out)
    end)
  end)

  describe("signals", function()
    -- Starts watchoutput on CHILD in the background, waits for "ready" on
    -- its stdout, then runs STEPS; $p is watchoutput's pid, $c the child's.
    -- Job control (set -m) because a plain background job starts with
    -- SIGINT and SIGQUIT ignored, and an ignored signal stays ignored.
    local function with_running(child, steps)
      return run([[
        set -m
        "$W" ]] .. child .. [[ >"$T/sig.out" 2>"$T/sig.err" &
        p=$!
        wait_until 10 "ready in sig.out" grep -q ready "$T/sig.out"
        c=$(pgrep -P $p)
        ]] .. steps)
    end

    -- Each case: watchoutput's arguments, the steps run against it, what
    -- the steps print (its exit status, mostly), and what the child wrote
    -- to sig.out (all of it) or watchoutput to sig.err (a part).
    local cases = {
      { "forwards SIGTERM to the child and exits 128+15",
        args = [[sh -c 'echo ready; exec sleep 100']], steps = [[
          kill -TERM $p
          wait_pid 10 $p; echo "rc=$?"
        ]], prints = "rc=143\n", err = "killed by signal 15" },
      { "exits with the child's own code when the child handles SIGTERM",
        args = [[sh -c 'trap "echo bye; exit 7" TERM; echo ready; while :; do sleep 0.05; done']],
        steps = [[
          kill -TERM $p
          wait_pid 10 $p; echo "rc=$?"
        ]], prints = "rc=7\n", out = "ready\nbye\n" },
      { "exits 128+15 at once on SIGTERM while waiting to retry",
        args = [[--retry-on-exit 3 --wait-before-retry 60 -- sh -c 'echo ready; exit 3']],
        steps = [[
          wait_until 10 "'retry 1 of' in sig.err" grep -q 'retry 1 of' "$T/sig.err"
          kill -TERM $p
          wait_pid 10 $p; echo "rc=$?"
        ]], prints = "rc=143\n", out = "ready\n" },
      { "forwards SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2",
        args = [[sh -c 'for s in INT HUP QUIT USR1 USR2; do trap "echo got-$s" $s; done
              echo ready; while :; do sleep 0.05; done']], steps = [[
          for s in INT HUP QUIT USR1 USR2; do
            kill -$s $p
            wait_until 10 "got-$s in sig.out" grep -q got-$s "$T/sig.out"
          done
          test -n "$c" || { echo "watchoutput (pid $p) had no child" >&2; exit 1; }
          kill -KILL $c; wait_pid 10 $p; echo "rc=$?"
        ]], prints = "rc=137\n", out = "ready\ngot-INT\ngot-HUP\ngot-QUIT\ngot-USR1\ngot-USR2\n" },
      { "takes the child down with it when killed by SIGKILL: no orphan within 2 s",
        args = [[sh -c 'echo ready; exec sleep 100']], steps = [[
          test -n "$c" || echo no-child
          kill -KILL $p
          wait_pid 10 $p 2>/dev/null
          gone=
          for i in $(seq 40); do
            if ! test -e /proc/$c || grep -q '^State:.*Z' /proc/$c/status 2>/dev/null; then
              gone=1; break
            fi
            sleep 0.05
          done
          echo "gone=$gone"
        ]], prints = "gone=1\n" },
    }
    for _, case in ipairs(cases) do
      it(case[1], function()
        local code, out = with_running(case.args, case.steps)
        assert.equal(0, code)
        assert.equal(case.prints, out)
        if case.out then assert.equal(case.out, slurp(path("sig.out"))) end
        if case.err then assert.truthy(slurp(path("sig.err")):find(case.err, 1, true)) end
      end)
    end
  end)

  describe("bad input", function()
    local function one_line(err)
      local l = lines(err)
      assert.equal(1, #l, "stderr: " .. err)
      assert.truthy(l[1]:find("^watchoutput: "), err)
      return l[1]
    end

    it("exits 2 with one line when no command is given", function()
      local code, out, err = run([["$W"]])
      assert.equal(2, code)
      assert.equal("", out)
      assert.truthy(one_line(err):find("no command"))
      local _
      code, _, err = run([["$W" --ignore-stderr --]])
      assert.equal(2, code)
      one_line(err)
    end)

    it("exits 2 with one line for an unknown option", function()
      local code, _, err = run([["$W" --frobnicate ls]])
      assert.equal(2, code)
      assert.truthy(one_line(err):find("%-%-frobnicate"))
      code, _, err = run([["$W" -x ls]])
      assert.equal(2, code)
      one_line(err)
    end)

    it("exits 2 with one line for bad values", function()
      for _, args in ipairs {
        "--retry-on-exit abc", "--retry-on-exit 3,", "--retry-on-exit 256",
        "--retry-on-exit -0", "--retry-on-exit ''", "--wait-before-retry x",
        "--wait-before-retry -1", "--max-retries 1.5", "--max-retries -1",
        "--max-retries",
      } do
        local code, out, err = run([["$W" ]] .. args .. [[ true]])
        assert.equal(2, code, args)
        assert.equal("", out, args)
        one_line(err)
      end
    end)

    it("exits 127 with one line for a missing program", function()
      local code, out, err = run([[
        "$W" /nonexistent/program-x; echo "rc=$?"
        "$W" no-such-program-clua-x
      ]])
      assert.equal(127, code)
      assert.equal("rc=127\n", out)
      assert.equal(2, #lines(err))
      assert.truthy(err:find("no%-such%-program%-clua%-x"))
    end)

    it("exits 126 with one line for a file that is not executable", function()
      spit(path("notexec"), "echo hi\n")
      local code, out, err = run([["$W" "$T/notexec"]])
      assert.equal(126, code)
      assert.equal("", out)
      one_line(err)
    end)

    it("prints its help on stdout and exits 0 for --help", function()
      local code, out = run([["$W" --help]])
      assert.equal(0, code)
      assert.truthy(out:find("^Usage: watchoutput"))
    end)
  end)

  -- Nothing it depends on can make it hang: a service manager that stops
  -- reading its notify socket, a reader of its stdout that stops reading,
  -- the signal state it inherits.
  describe("never hangs", function()
    local testkit = require("testkit")

    it("relays all of seq 1 300000 in order to a notify socket nobody reads, "
        .. "and exits with the child's code", function()
      local addr = ("@clua-watchoutput-spec-%d-%d"):format(testkit.getpid(),
        math.floor(testkit.now("monotonic") * 1e6))
      local rx = assert(testkit.dgram_listen(addr)) -- never read
      -- 30 bursts 20 ms apart, a heartbeat due every 5 ms: some 30
      -- messages, the socket's queue holds 10.
      local code, out = run("N=" .. q(addr) .. [[

        NOTIFY_SOCKET=$N WATCHDOG_USEC=20000 timeout -k 1 30 "$W" sh -c '
          i=0
          while [ $i -lt 30 ]; do
            seq $((i * 10000 + 1)) $(((i + 1) * 10000)); sleep 0.02; i=$((i + 1))
          done
          exit 7' 2>"$T/nr.err" | cat >"$T/nr.out"
        echo "rc=${PIPESTATUS[0]}"
        seq 1 300000 | cmp - "$T/nr.out" && echo same
        grep -c 'NOTIFY_SOCKET: Resource temporarily unavailable' "$T/nr.err"
      ]])
      rx:close()
      assert.equal(0, code)
      assert.equal("rc=7\nsame\n1\n", out, slurp(path("nr.err")))
    end)

    it("exits with the child's code when started with SIGCHLD ignored, "
        .. "and the child gets SIGCHLD back at its default", function()
      if not have("perl") then return pending("needs perl") end
      -- An ignored SIGCHLD survives exec; the kernel then reaps the child
      -- itself and sends no SIGCHLD.
      local code, out = run([[
        timeout -k 1 10 perl -e '$SIG{CHLD} = "IGNORE"; exec @ARGV or exit 126' \
          "$W" sh -c 'sleep 0.1 & wait $!; echo "waited=$?"; exit 3'
        echo "rc=$?"
      ]])
      assert.equal(0, code)
      assert.equal("waited=0\nrc=3\n", out)
    end)

    it("starts the child with no signal blocked, whatever mask it inherited", function()
      if not have("perl") then return pending("needs perl") end
      local code, out = run([[
        timeout -k 1 10 perl -e 'use POSIX;
            sigprocmask(SIG_BLOCK, POSIX::SigSet->new(SIGTERM, SIGINT));
            exec @ARGV or exit 126' "$W" grep SigBlk /proc/self/status
      ]])
      assert.equal(0, code)
      assert.equal("SigBlk:\t0000000000000000\n", out)
    end)

    -- Starts watchoutput on CHILD with its stdout into a pipe nobody
    -- reads, sends it SIGTERM once the pipes are full, and prints its exit
    -- status and how long it took to exit after the signal (ms).  "Full"
    -- is seen, not assumed: the child sleeps in write(2) to its pipe (1 MiB,
    -- which watchoutput stopped draining once its own stdout, 64 KiB, was
    -- full), three looks 0.1 s apart.
    local function term_while_stalled(child)
      return run([[
        set -m
        (
          "$W" ]] .. child .. [[ 2>"$T/st.err" &
          echo $! >"$T/st.pid"
          wait $!
          echo "rc=$?" >"$T/st.rc"
        ) | sleep 30 &
        wait_until 10 "watchoutput's pid in st.pid" test -s "$T/st.pid"
        p=$(cat "$T/st.pid")
        wait_until 10 "watchoutput (pid $p) to start its child" pgrep -P $p
        c=$(pgrep -P $p)
        blocked() {
          for k in 1 2 3; do
            grep -q pipe_write "/proc/$c/wchan" 2>/dev/null || return 1
            sleep 0.1
          done
        }
        wait_until 30 "the child (pid $c) to block writing to a full pipe" blocked
        start=$(cut -d" " -f1 /proc/uptime | tr -d .)
        kill -TERM $p
        wait_until 10 "watchoutput to exit after SIGTERM (st.rc)" test -s "$T/st.rc"
        echo "$(cat "$T/st.rc") ms=$((($(cut -d" " -f1 /proc/uptime | tr -d .) - start) * 10))"
      ]])
    end

    -- Output that finds no room within 0.5 s after SIGTERM is dropped
    -- (watchoutput(1)): 2 s leaves room for a busy machine; one that waited for
    -- its reader would wait the reader's 30 s.
    it("passes SIGTERM on while its reader has stopped reading, and exits within 2 s "
        .. "with the child's code", function()
      local code, out = term_while_stalled(
        [[sh -c 'trap "exit 4" TERM; while :; do echo line; done']])
      assert.equal(0, code)
      local rc, ms = out:match("^rc=(%d+) ms=(%d+)\n$")
      assert.equal("4", rc, out .. slurp(path("st.err")))
      assert.is_true(tonumber(ms) <= 2000, out)
      assert.truthy(slurp(path("st.err")):find("not being read", 1, true))
    end)

    it("passes SIGTERM on while its reader has stopped reading, and exits within 2 s "
        .. "with 143 when it killed the child", function()
      local code, out = term_while_stalled([[sh -c 'while :; do echo line; done']])
      assert.equal(0, code)
      local rc, ms = out:match("^rc=(%d+) ms=(%d+)\n$")
      assert.equal("143", rc, out .. slurp(path("st.err")))
      assert.is_true(tonumber(ms) <= 2000, out)
    end)

    it("waits for a slow reader and relays everything when the child exits on its own",
      function()
        local code, out = run([[
          seq 1 300000 | md5sum
          "$W" seq 1 300000 | { sleep 1; md5sum; }
          echo "rc=${PIPESTATUS[0]}"
        ]])
        assert.equal(0, code)
        local l = lines(out)
        assert.equal(l[1], l[2])
        assert.equal("rc=0", l[3])
      end)

    it("does not pass a terminal's Ctrl-C on: the child got it already", function()
      if not (have("script") and have("perl")) then
        return pending("needs script(1) for a terminal, and perl")
      end
      -- The terminal sends SIGINT to its whole foreground process group,
      -- the child included.  The child counts what it gets; strace, when
      -- there, shows whether watchoutput sent one more.
      spit(path("cc.pl"), [[
        $| = 1; my $n = 0;
        $SIG{INT} = sub { $n++; print "got-INT\n" };
        print "ready\n";
        my $end = time + 20;
        select(undef, undef, undef, 0.02) while $n < 2 && time < $end;
        select(undef, undef, undef, 0.3);   # room for a second delivery
        print "total $n\n";
        exit 5;
      ]])
      local trace = have("strace")
        and [[strace -I3 -o "$T/kill.trace" -e trace=kill -e signal=none ]] or ""
      -- (LeakSanitizer, in the ASan build, cannot run under ptrace.)
      local code, out = run((trace ~= "" and
        [[export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"]] or "") .. [[

        export W T
        mkfifo "$T/tty.in"
        script -qec ']] .. trace .. [["$W" perl "$T/cc.pl"; echo "rc=$?"' /dev/null \
          <"$T/tty.in" >"$T/tty.out" 2>&1 &
        s=$!
        # read-write: opening the FIFO does not wait for its reader
        exec 3<>"$T/tty.in"
        wait_until 20 "ready on the terminal" grep -q ready "$T/tty.out"
        printf '\003' >&3
        wait_until 20 "got-INT on the terminal" grep -q got-INT "$T/tty.out"
        printf '\003' >&3
        wait_until 20 "rc= on the terminal" grep -q rc= "$T/tty.out"
        exec 3>&-
        wait_pid 10 $s
        tr -d '\r' <"$T/tty.out" | grep -e total -e rc=
        test -f "$T/kill.trace" && grep -c 'kill(' "$T/kill.trace"
        :
      ]])
      assert.equal(0, code)
      assert.equal("total 2\nrc=5\n" .. (trace ~= "" and "0\n" or ""), out,
        slurp(path("tty.out")))
    end)

    it("waits right under a watchdog of months: no early wake-up from an int overflow",
      function()
        if not have("strace") then return pending("needs strace") end
        -- Output right after READY=1 waits for the rate limit, a quarter of
        -- WATCHDOG_USEC: here 2^32 + 2000 ms.  Cast to an int, poll()'s
        -- timeout would wrap to 2 s: a wake-up then, and more after it.
        local code, out = run([[
          NOTIFY_SOCKET="$T/no-manager" WATCHDOG_USEC=17179877184000 \
            "$W" sh -c 'echo one; echo two; exec sleep 100' >"$T/big.out" 2>/dev/null &
          p=$!
          wait_until 10 "two in big.out" grep -q two "$T/big.out"
          timeout -k 2 3 strace -p $p -o "$T/big.strace" 2>/dev/null
          kill -TERM $p; wait_pid 10 $p
          grep -c 'poll(' "$T/big.strace"
          :
        ]])
        assert.equal(0, code)
        assert.equal("0\n", out, slurp(path("big.strace")))
      end)
  end)

  describe("environment", function()
    it("gives the child no NOTIFY_SOCKET, WATCHDOG_USEC or WATCHDOG_PID, and the rest", function()
      local code, out = run([[
        NOTIFY_SOCKET="$T/no-socket" WATCHDOG_USEC=2000000 WATCHDOG_PID=1 CLUA_MARK=kept "$W" env
      ]])
      assert.equal(0, code)
      assert.is_nil(out:find("NOTIFY_SOCKET"))
      assert.is_nil(out:find("WATCHDOG_"))
      assert.truthy(("\n" .. out):find("\nCLUA_MARK=kept\n"))
    end)
  end)

  describe("idle", function()
    -- strace over 2 s; the only line allowed is the poll() that strace's
    -- attach interrupts and restarts.
    local function syscalls_while_idle(child)
      local code, out = run([[
        "$W" ]] .. child .. [[ >"$T/idle.out" 2>/dev/null &
        p=$!
        wait_until 10 "ready in idle.out" grep -q ready "$T/idle.out"
        sleep 0.3
        timeout -k 2 2 strace -f -p $p -o "$T/idle.strace" 2>/dev/null
        kill -TERM $p; wait_pid 10 $p
        grep -v -e 'restart_syscall' -e '^[0-9]* *poll(' "$T/idle.strace"
        :
      ]])
      assert.equal(0, code)
      return out
    end

    it("makes no system call while the child is silent", function()
      if not have("strace") then return pending("needs strace") end
      assert.equal("", syscalls_while_idle([[sh -c 'echo ready; exec sleep 100']]))
    end)

    it("makes no system call once the child closed its stdout but lives", function()
      if not have("strace") then return pending("needs strace") end
      assert.equal("", syscalls_while_idle(
        [[sh -c 'echo ready; exec >&- 2>&-; exec sleep 100']]))
    end)
  end)
  describe("make install", function()
    it("puts watchoutput and its man page under DESTDIR/PREFIX; uninstall removes them", function()
      local root = os.getenv("CLUA_ROOT") or "."
      local code, out = run("R=" .. q(root) .. [[

        make -s -C "$R" install-tools PREFIX=/opt/wo DESTDIR="$T/stage"
        "$T/stage/opt/wo/bin/watchoutput" --version
        test -f "$T/stage/opt/wo/share/man/man1/watchoutput.1" && echo man
        # the page renders without a warning (where man-db is installed)
        if command -v man >/dev/null; then
          man --warnings -l "$T/stage/opt/wo/share/man/man1/watchoutput.1" 2>&1 >/dev/null
        fi
        make -s -C "$R" uninstall PREFIX=/opt/wo DESTDIR="$T/stage"
        test -e "$T/stage/opt/wo/bin/watchoutput" && echo still-there
        :
      ]], 300)
      assert.equal(0, code)
      assert.matches("^watchoutput %d+%.%d+%.%d+\nman\n$", out)
    end)
  end)
end)

describe("watchoutput under a real systemd --user #integration", function()
  local systemd = require("support.systemd")
  local mgr, why

  setup(function()
    mgr, why = systemd.start()
  end)
  teardown(function()
    if mgr then mgr:stop() end
  end)

  -- False, and the test pending with the reason, when systemd cannot run
  -- here.
  local function have_manager()
    if not mgr then
      pending("needs a systemd --user manager: " .. tostring(why))
      return false
    end
    return true
  end

  -- Installs and starts a Type=notify unit with WatchdogSec=2 running
  -- watchoutput ARGS; returns false when systemd cannot run here.
  local function service(name, args, extra)
    if not have_manager() then return false end
    mgr:install_unit(name, table.concat({
      "[Service]", "Type=notify", "WatchdogSec=2",
      "ExecStart=" .. W .. " " .. args, extra or "", "",
    }, "\n"))
    mgr:start(name)
    assert(mgr:wait_for(name, "ActiveState", "active", 10),
      name .. " did not become active; log:\n" .. mgr:log())
    return true
  end

  it("keeps a unit whose child prints every 0.5 s active for 8 s with no restart", function()
    if not service("talk.service", [[sh -c 'while :; do echo tick; sleep 0.5; done']],
      "Restart=on-failure") then return end
    local pid = mgr:show("talk.service", "MainPID")
    shell.sleep(8)
    assert.equal("active", mgr:show("talk.service", "ActiveState"))
    assert.equal("0", mgr:show("talk.service", "NRestarts"))
    assert.equal(pid, mgr:show("talk.service", "MainPID"))
    -- STATUS= names the command, its pid and its last line
    assert.truthy(mgr:show("talk.service", "StatusText"):find("^sh %(pid %d+%): tick$"))
    mgr:stop_unit("talk.service")
  end)

  it("sends at most a few WATCHDOG=1 per interval however fast the child prints", function()
    if not have("strace") then return pending("needs strace") end
    if not service("chatty.service", [[sh -c 'while :; do echo x; sleep 0.001; done']],
      "StandardOutput=null") then return end
    local pid = mgr:show("chatty.service", "MainPID")
    local _, out = shell.run("timeout -k 2 2 strace -e trace=sendmsg,sendto -p " .. pid
      .. " 2>&1 | grep -c 'WATCHDOG=1'")
    -- a quarter of WatchdogSec: 4 in 2 s, one more for timing at the edges
    -- (at least one: strace's attach on a busy machine eats into the 2 s;
    -- a heartbeat per line would be thousands)
    local pings = tonumber(out)
    assert.is_true(pings >= 1 and pings <= 5, "pings in 2 s: " .. out)
    assert.equal("active", mgr:show("chatty.service", "ActiveState"))
    mgr:stop_unit("chatty.service")
  end)

  it("makes no system call under a watchdog once the child fell silent", function()
    if not have("strace") then return pending("needs strace") end
    -- Output right after READY=1 waits for the rate limit (a quarter of
    -- WatchdogSec, 2 s): that one timed wakeup, then none.
    if not service("quiet.service", [[sh -c 'echo one; echo two; exec sleep 100']],
      "WatchdogSec=8") then return end
    local pid = mgr:show("quiet.service", "MainPID")
    -- That wake-up sent the last line as STATUS=: seen, not assumed.
    mgr:wait_for("quiet.service", "StatusText", function(v) return v:find(": two$") end, 10)
    shell.sleep(0.5)
    local _, out = shell.run("f=$(mktemp); timeout -k 2 2 strace -f -p " .. pid
      .. [[ -o "$f" 2>/dev/null; grep -v -e restart_syscall -e '^[0-9]* *poll(' "$f"; rm -f "$f"]])
    assert.equal("", out)
    assert.truthy(mgr:show("quiet.service", "StatusText"):find(": two$"))
    mgr:stop_unit("quiet.service")
  end)

  it("lets the watchdog kill a silent child (sleep 100): Result=watchdog within 3 s", function()
    if not service("silent.service", "sleep 100") then return end
    local ok, last = mgr:wait_for("silent.service", "Result", "watchdog", 10)
    assert.is_true(ok, "Result=" .. tostring(last))
    -- Measured by the manager (CLOCK_MONOTONIC both), not by this spec's
    -- polling: from active to the kill.
    local function at(prop) return tonumber(mgr:show("silent.service", prop)) / 1e6 end
    local took = at("ExecMainExitTimestampMonotonic") - at("ActiveEnterTimestampMonotonic")
    assert.is_true(took > 0 and took <= 3, ("killed %.2f s after it was active"):format(took))
  end)

  it("treats a child that closed its stdout as silent, and Restart=on-failure starts it again",
    function()
      if not service("closed.service", [[sh -c 'exec >&-; sleep 100']],
        "Restart=on-failure\nRestartSec=2") then return end
      local pid = mgr:show("closed.service", "MainPID")
      -- (the kill's timing: the test above)
      local ok, last = mgr:wait_for("closed.service", "Result", "watchdog", 10)
      assert.is_true(ok, "Result=" .. tostring(last))
      ok, last = mgr:wait_for("closed.service", "NRestarts", "1", 10)
      assert.is_true(ok, "NRestarts=" .. tostring(last))
      assert.is_true(mgr:wait_for("closed.service", "ActiveState", "active", 10))
      assert.are_not.equal(pid, mgr:show("closed.service", "MainPID"))
      mgr:stop_unit("closed.service")
    end)

  it("hides NOTIFY_SOCKET and WATCHDOG_* from the child while using them itself", function()
    if not have_manager() then return end
    local envfile = mgr.dir .. "/child.env"
    if not service("env.service", "sh -c 'env >" .. envfile .. ".tmp; mv " .. envfile
      .. ".tmp " .. envfile .. "; sleep 100'") then return end
    -- written once the child runs, which may come after READY=1
    local env = shell.wait_for(envfile, 10, function() return slurp(envfile) end)
    assert.truthy(env:find("PATH="))
    assert.is_nil(env:find("NOTIFY_SOCKET"))
    assert.is_nil(env:find("WATCHDOG_"))
    mgr:stop_unit("env.service")
  end)

  it("leaves a unit inactive, not failed, after systemctl stop",
    function()
      if not service("stop.service", "sleep 100") then return end
      assert.is_true(mgr:stop_unit("stop.service"))
      assert.equal("inactive", mgr:show("stop.service", "ActiveState"))
      assert.equal("success", mgr:show("stop.service", "Result"))
    end)
end)

