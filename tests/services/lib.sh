# Sourced by the scripts beside it (sshd, hosts, slurm, up, down); not a command itself.
#
# Conventions every service script follows:
# - all state lives under $CLUSTERCORE_SERVICES_DIR (default /tmp/clustercore-services);
# - a daemon is "ours" only if the pid in our pid file is a live process whose command line
#   names a file under that directory; nothing is ever found or signalled by process name;
# - every wait has a deadline; every `up` is idempotent; `down` ends only what `up` started;
# - stdout carries nothing but `export NAME=value` lines; messages go to stderr.

set -Eeuo pipefail
# a failure names its command: "RTNETLINK answers: File exists" alone does not say which one
trap 'say "failed (exit $?): $BASH_COMMAND (${BASH_SOURCE[0]:-$0} line $LINENO)"' ERR
shopt -s nullglob
export LC_ALL=C
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" # sshd, slurmd, munged and ip live in sbin

S="${CLUSTERCORE_SERVICES_DIR:-/tmp/clustercore-services}"
SERVICES_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NET=10.200.0             # the private /24 that exists only between the namespaces below
GUARD_ROUTE=10.200.0.0/16 # "unreachable" in the root namespace: never leaks to the default route
CTL_ADDR=$NET.1          # the root namespace's end, as seen from the hosts
NUM_HOSTS=3
ME="${ME:-services}"

say() { echo "$ME: $*" >&2; }
die() {
  say "ERROR: $*"
  exit 1
}
need_root() {
  [ "$(id -u)" = 0 ] || die "must run as root (it installs packages, starts daemons and makes network namespaces)"
}
# `matches PATTERN...` is `grep -q` for the end of a pipeline: it reads all of its input. Under
# pipefail, `cmd | grep -q` fails at random when grep exits at the first match and cmd, still
# writing, dies of SIGPIPE (iproute2 flushes after every line).
matches() { grep "$@" >/dev/null; }
host_addr() { echo "$NET.$((10 + $1))"; }

# ---------------------------------------------------------------- processes, by pid only
is_live() { # PID: exists and is not a zombie (PID 1 may take a while to reap orphans)
  local stat
  [[ "$1" =~ ^[0-9]+$ ]] || return 1
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [ -n "$stat" ] && [ "${stat%% *}" != Z ]
}
pid_from() { # FILE: the pid it holds (empty if none)
  [ -s "$1" ] && tr -dc '0-9' <"$1" || true
}
ours() { # PID TEXT: live, and TEXT is part of its command line (a path under $S)
  local pid="$1"
  is_live "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | matches -F -- "$2"
}
lineage() { # this shell and its ancestors, space-separated: never signalled
  local p=$$ out=" "
  while [ -n "$p" ] && [ "$p" != 0 ]; do
    out+="$p "
    p="$(awk '/^PPid:/ {print $2}' "/proc/$p/status" 2>/dev/null)" || break
  done
  echo "$out"
}
descendants() { # PID: every process below it in the process tree
  ps -e -o pid=,ppid= | awk -v root="$1" '
    { kids[$2] = kids[$2] " " $1 }
    END {
      n = split(kids[root], todo, " ")
      for (i = 1; i <= n; i++) {
        print todo[i]
        m = split(kids[todo[i]], more, " ")
        for (j = 1; j <= m; j++) todo[++n] = more[j]
      }
    }'
}
live_of() { # PID...: those still live
  local p
  for p in "$@"; do is_live "$p" && echo "$p"; done
  true
}
stop_pids() { # GRACE PID...: SIGTERM, wait up to GRACE s, then SIGKILL (and wait up to 5 s)
  local grace="$1" p keep pids=() left=() deadline
  shift
  keep="$(lineage)"
  for p in "$@"; do [[ "$keep" == *" $p "* ]] || pids+=("$p"); done
  ((${#pids[@]})) || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  deadline=$((SECONDS + grace))
  while mapfile -t left < <(live_of "${pids[@]}") && ((${#left[@]})) && ((SECONDS < deadline)); do sleep 0.1; done
  ((${#left[@]})) || return 0
  kill -KILL "${left[@]}" 2>/dev/null || true
  deadline=$((SECONDS + 5))
  while mapfile -t left < <(live_of "${left[@]}") && ((${#left[@]})) && ((SECONDS < deadline)); do sleep 0.1; done
  ((${#left[@]})) || return 0
  say "warning: still alive after SIGKILL: ${left[*]}"
}
wait_for() { # SECONDS WHAT CMD...: retry CMD every 0.2 s until it succeeds, or die
  local limit="$1" what="$2" deadline
  shift 2
  deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${limit} s waiting for $what"
    sleep 0.2
  done
}

# Daemons start with nothing of the caller's environment (test variables must not leak in),
# stdin from /dev/null, and without the descriptor of $S/.lock (fd 8), which a daemon would
# otherwise hold forever. Callers send stdout and stderr to a log: a daemon must not keep the
# caller's pipes open (a test that runs `slurm up` waits for them to close).
daemon() { # CMD...
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    HOME="${HOME:-/root}" "$@" 8>&- </dev/null
}

# ---------------------------------------------------------------- one at a time
# The outermost script takes $S/.lock; the scripts it runs inherit it (CC_SERVICES_LOCKED).
take_lock() {
  [ -n "${CC_SERVICES_LOCKED:-}" ] && return 0
  mkdir -p "$S"
  chmod 0755 "$S"
  exec 8>"$S/.lock"
  flock -w 600 8 || die "another tests/services script has held $S/.lock for 600 s"
  export CC_SERVICES_LOCKED=1
}

# ---------------------------------------------------------------- Debian packages
missing_packages() { # PKG...: those not installed
  local p
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] || echo "$p"
  done
}
ensure_packages() { # PKG...: install the missing ones; `apt-get update` once first
  local need made_policy=0 log="$S/apt.log"
  mapfile -t need < <(missing_packages "$@")
  ((${#need[@]})) || return 0
  need_root
  say "installing ${need[*]} (log: $log)"
  export DEBIAN_FRONTEND=noninteractive
  # Package scripts must not start system daemons (no systemd here; they would not be ours).
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=300)
  local ok=1
  timeout 600 apt-get update -q >>"$log" 2>&1 || ok=0
  if [ "$ok" = 1 ]; then timeout 900 apt-get install "${opts[@]}" "${need[@]}" >>"$log" 2>&1 || ok=0; fi
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  if [ "$ok" = 0 ]; then
    tail -n 20 "$log" >&2
    die "could not install ${need[*]}"
  fi
}

# ---------------------------------------------------------------- the env file
# $S/env: every running service's variables; the tests read it (tests/services/ccservices.py).
write_env() {
  local tmp
  mkdir -p "$S"
  tmp="$(mktemp "$S/env.XXXXXX")"
  {
    echo "# written by tests/services; source it (set -a; . $S/env) or let the tests read it"
    cat "$S/sshd-local/env" "$S/hosts/env" "$S/slurm/env" "$S/k8s/env" 2>/dev/null || true
  } >"$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$S/env"
}
