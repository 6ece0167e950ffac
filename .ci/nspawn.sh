# shellcheck shell=bash
# .ci/nspawn.sh: boots a Debian root as a system container, systemd as its
# PID 1 on the unified cgroup hierarchy (cgroup v2, what users have), even
# on a host whose own PID 1 is not systemd and whose cgroups are v1.
# Sourced (bash) by .ci/check-login and .ci/debian-root:
#
#   boot_start DIR LOG   boots DIR (nspawn's output to LOG); returns once
#                        `systemctl is-system-running` answers running or
#                        degraded (at most 90 s), else 1 saying why
#   boot_in CMD...       runs CMD in the container's namespaces (nsenter)
#   boot_run CMD...      runs CMD as a transient service of the container
#                        (systemd-run --pipe --wait): in a control group of
#                        its own inside the container, delegated to it, so
#                        that a `systemd --user` it starts can make its own;
#                        returns CMD's exit status (its words are passed
#                        as they are: systemd's $VAR expansion is undone)
#   boot_stop            halts the container (SIGTERM to nspawn, at most
#                        30 s, then SIGKILL) and removes its control groups;
#                        safe to call twice and when boot_start failed
#
# Needs root and systemd-nspawn (systemd-container). The root directory must
# be mode 0755: with mktemp's 0700 dbus-daemon cannot read
# /usr/share/dbus-1 and every call to logind waits 25 s.
#
# Every container gets control groups of its own, made beside the caller's:
# with --keep-unit nspawn puts the container below the group of the process
# that runs it, and two containers started from one group would share one.
# --private-network: only a loopback device, so that X servers and their
# abstract sockets (@/tmp/.X11-unix/X0) of the container and of the host
# never meet. --register=no --keep-unit: there is no machined, nor a system
# bus, on such a host.

BOOT_NSPAWN= BOOT_PID= BOOT_CGROUPS=()
# More systemd-nspawn options (e.g. --capability=CAP_SYS_TIME), set by the caller.
BOOT_OPTS=()

boot_start() {
	local dir=$1 log=$2 m cg i state name=clua-nspawn.$$.$RANDOM
	boot_stop
	if ! command -v systemd-nspawn >/dev/null; then
		echo "systemd-nspawn is not installed (apt-get install systemd-container)" >&2
		return 1
	fi
	# The unified hierarchy, and the name=systemd one of a hybrid host.
	BOOT_CGROUPS=()
	for m in $(awk '$3 == "cgroup2" || ($3 == "cgroup" && $4 ~ /(^|,)name=systemd(,|$)/) { print $2 }' /proc/mounts); do
		cg=$m/$name
		mkdir "$cg" 2>/dev/null && BOOT_CGROUPS+=("$cg")
	done
	(
		for cg in "${BOOT_CGROUPS[@]}"; do echo "$BASHPID" >"$cg/cgroup.procs"; done
		exec env --default-signal SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn -q \
			--register=no --keep-unit --private-network "${BOOT_OPTS[@]}" -D "$dir" -b --console=pipe
	) >"$log" 2>&1 </dev/null &
	BOOT_NSPAWN=$!
	for i in $(seq 300); do
		BOOT_PID=$(pgrep -P "$BOOT_NSPAWN" -x systemd | head -n 1)
		[ -n "$BOOT_PID" ] && break
		kill -0 "$BOOT_NSPAWN" 2>/dev/null || break
		sleep 0.1
	done
	if [ -z "$BOOT_PID" ]; then
		echo "systemd-nspawn did not start systemd in $dir; its output:" >&2
		tail -n 20 "$log" >&2
		return 1
	fi
	# Until PID 1 answers on its private socket, then until it has booted.
	local deadline=$(($(cut -d. -f1 /proc/uptime) + 90))
	while [ "$(cut -d. -f1 /proc/uptime)" -lt "$deadline" ]; do
		state=$(timeout 5 nsenter -t "$BOOT_PID" -a systemctl is-system-running 2>&1)
		case $state in
		running | degraded) return 0 ;;
		starting | initializing) ;;
		*) kill -0 "$BOOT_NSPAWN" 2>/dev/null || break ;;
		esac
		sleep 0.1
	done
	echo "the container did not finish booting within 90 s (is-system-running: $state); its jobs:" >&2
	timeout 10 nsenter -t "$BOOT_PID" -a systemctl list-jobs --no-pager 2>&1 | tail -n 10 >&2
	return 1
}

boot_in() {
	nsenter -t "$BOOT_PID" -a "$@"
}

boot_run() {
	nsenter -t "$BOOT_PID" -a systemd-run --quiet --wait --pipe --collect \
		--service-type=exec -p Delegate=yes \
		--setenv=HOME=/root --setenv=LANG=C.UTF-8 --setenv=TERM=dumb \
		--setenv=DEBIAN_FRONTEND=noninteractive -- "${@//\$/\$\$}"
}

boot_stop() {
	local i cg
	if [ -n "$BOOT_NSPAWN" ]; then
		kill -TERM "$BOOT_NSPAWN" 2>/dev/null
		for i in $(seq 300); do
			kill -0 "$BOOT_NSPAWN" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$BOOT_NSPAWN" 2>/dev/null
		wait "$BOOT_NSPAWN" 2>/dev/null
	fi
	# What is left in the container's groups (after a SIGKILL of nspawn),
	# then the groups, deepest first.
	for cg in "${BOOT_CGROUPS[@]}"; do
		[ -d "$cg" ] || continue
		find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null
		for i in $(seq 50); do
			find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
			[ -d "$cg" ] || break
			sleep 0.1
		done
	done
	BOOT_NSPAWN= BOOT_PID= BOOT_CGROUPS=()
}
