#!/usr/bin/env bash
# End-to-end comparison of sinew and HAProxy on this machine, side by side in one run.
#
# Three nginx backends (1 worker each, `return 200 "ok\n"`), HAProxy (1 thread, `http-reuse always`, and the
# forwarded headers sinew adds by default) and sinew (release build) proxy them in HTTP mode (round robin)
# and TCP mode (least connections). Proxies and backends are pinned to CPU 0, wrk to CPU 1. Each round runs
# wrk -t1 -c64 against direct, HAProxy and sinew, keep-alive and `Connection: close`, interleaved; the table
# shows the median over rounds and the sinew/HAProxy ratios, with the CPU time each proxy spent per request
# (the figure that decides throughput when the CPU is the limit, and the one least disturbed by other load
# on the machine) and how often it was preempted per request, and the CPU time the backends spent per
# request behind it (on the proxy's core, what a proxy costs its backends bounds throughput too). A third
# mode, bulk, fetches a 100 KB response over keep-alive. Then, in a separate short pass so the timed cells
# stay undisturbed, it counts each proxy's system calls per request in each mode (`perf stat` on the syscall
# tracepoints, counted in the kernel, attached to the proxy's process while wrk runs, divided by the
# requests wrk reports). Last it reports the memory each proxy holds per idle keep-alive client connection,
# and sinew's RSS with 100 services of 10 backends.
#
# usage: bash benches/e2e/run.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 6 s per cell)
# E2E_PASSES lists the passes to run (default "throughput syscalls memory"); system call counts do not
# depend on the machine's load, so `E2E_PASSES=syscalls` can be run on a busy machine.
# E2E_SOCKMAP=1 adds a `sinew-sockmap` row: the TCP service again with `tcp_fastpath: sockmap`.
# E2E_URING=1 adds `sinew-uring` and `sinew-uring-http` rows: the TCP and the HTTP service again with
# `tcp_fastpath: io_uring` (the HTTP one on the ring with `threads: 1` only), with an io_uring/copy
# ratio table.
# E2E_SINEW_BIN runs that sinew binary instead of building this tree's (to compare two builds with
# the same script: an earlier commit's binary, then this one's).
# E2E_SINEW_BASE adds `base-http` and `base-tcp` rows: that sinew binary (an earlier build) run beside
# the one measured, in its own session on the same CPU, with a sinew/base ratio table, so two builds
# are compared in one run rather than across runs on a machine whose load changes. With E2E_URING=1 too,
# the base runs the io_uring services as well (`base-uring`, `base-uring-http` rows).
# E2E_RELAY=1 adds `relay-epoll` and `relay-uring` rows: the minimal TCP relay of benches/e2e/relay.rs
# (`cargo build --release --example relay`) on epoll and on io_uring, over the same three backends, each in
# its own session on CPU 0, timed and counted in every mode, with a relay/HAProxy table. E2E_RELAY_ARGS
# adds arguments to the io_uring relay (its tuning knobs: `--bufs N`, `--defer on|off`, `--ring-fd on|off`).
# E2E_MODES lists the modes to time (default "keepalive close bulk").
# E2E_THREADS=N runs both proxies with N threads (HAProxy `nbthread N`, sinew `threads: N`), pinned with
# the backends to CPUs 0..N-1 and wrk to the CPUs left; on a machine with no CPU left, wrk shares all of
# them (CPU per request is then the figure to read, req/s is the load generator's share too).
# E2E_SYSCALL_SECS is the length of each cell of the system call pass (default 2).
# With E2E_BACKENDS_BATCH=1 the nginx workers run under SCHED_BATCH: their wake-ups no longer preempt
# the proxy sharing their CPU, as backends on other hosts would not (a diagnostic, not the default).
# Installs haproxy, wrk and nginx-light from Debian when missing. Everything it starts it stops by PID.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
secs=${2:-6}
passes=${E2E_PASSES:-throughput syscalls memory}
modes=${E2E_MODES:-keepalive close bulk}
threads=${E2E_THREADS:-1}
syscall_secs=${E2E_SYSCALL_SECS:-2}
here=benches/e2e

need=()
for p in haproxy wrk nginx; do command -v "$p" >/dev/null || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy wrk nginx-light >/dev/null
fi
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs (proxies on CPU 0, load on CPU 1)" >&2; exit 1; }
# CPUs of the proxies and backends, and of the load generator.
if [ "$threads" -lt "$(nproc)" ]; then
  proxy_cpus=0-$((threads - 1))
  load_cpus=$threads-$(($(nproc) - 1))
else
  proxy_cpus=0-$(($(nproc) - 1))
  load_cpus=$proxy_cpus
fi

if [ -n "${E2E_SINEW_BIN:-}" ]; then
  bin=$(realpath "$E2E_SINEW_BIN")
  echo "== sinew: $bin"
else
  echo "== building sinew (release)"
  cargo build --release -q
  bin=$PWD/target/release/sinew
fi
relay=${E2E_RELAY:-}
if [ -n "$relay" ]; then
  echo "== building the relay (release)"
  cargo build --release -q --example relay
fi

work=$(mktemp -d /tmp/sinew-e2e.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.2
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Free loopback ports: b1 b2 b3 haproxy-http haproxy-tcp sinew-http sinew-tcp sinew-admin rss-admin
# sinew-sockmap base-http base-tcp base-admin relay-epoll relay-uring sinew-uring sinew-uring-http
# base-uring base-uring-http.
read -r b1 b2 b3 hh ht sh st sa ra sk bh bt ba re ru su sx bu bx < <(python3 "$here/free_ports.py" 19)

# Replace @NAME@ placeholders in a template.
render() {
  sed -e "s|@B1@|$b1|g; s|@B2@|$b2|g; s|@B3@|$b3|g; s|@HH@|$hh|g; s|@HT@|$ht|g" \
      -e "s|@SH@|$sh|g; s|@ST@|$st|g; s|@SA@|$sa|g; s|@WORK@|$work|g; s|@NT@|$threads|g" "$1" >"$2"
}
render "$here/nginx.conf" "$work/nginx.conf"
render "$here/haproxy.cfg" "$work/haproxy.cfg"
render "$here/sinew.yaml" "$work/sinew.yaml"
# E2E_SINEW_BASE: the same services on another binary, for a build-to-build comparison.
base_bin=${E2E_SINEW_BASE:+$(realpath "$E2E_SINEW_BASE")}
if [ -n "$base_bin" ]; then
  echo "== base: $base_bin"
  sed -e "s|:$sa\b|:$ba|; s|:$sh\b|:$bh|; s|:$st\b|:$bt|" "$work/sinew.yaml" >"$work/base.yaml"
fi
# Appends to FILE the TCP service again as NAME on PORT with `tcp_fastpath: PATH`.
tcp_service_on() { # file name port path
  cat >>"$1" <<EOF_SERVICE
  $2:
    listen: 127.0.0.1:$3
    mode: tcp
    balance: least_conn
    tcp_fastpath: $4
    backends: [127.0.0.1:$b1, 127.0.0.1:$b2, 127.0.0.1:$b3]
    health_check: { type: tcp, interval: 2s }
EOF_SERVICE
}
# E2E_SOCKMAP=1: the TCP service on the kernel's sockmap path (`sinew-sockmap`).
sockmap=${E2E_SOCKMAP:-}
[ -z "$sockmap" ] || tcp_service_on "$work/sinew.yaml" tcp_sockmap "$sk" sockmap
# E2E_URING=1: the TCP and HTTP services on the io_uring engine (`sinew-uring`, `sinew-uring-http`).
uring=${E2E_URING:-}
# Appends to FILE the HTTP service again on PORT with `tcp_fastpath: io_uring`.
http_uring_on() { # file port
  cat >>"$1" <<EOF_SERVICE
  http_uring:
    listen: 127.0.0.1:$2
    mode: http
    balance: round_robin
    tcp_fastpath: io_uring
    backends: [127.0.0.1:$b1, 127.0.0.1:$b2, 127.0.0.1:$b3]
    health_check: { type: tcp, interval: 2s }
EOF_SERVICE
}
if [ -n "$uring" ]; then
  tcp_service_on "$work/sinew.yaml" tcp_uring "$su" io_uring
  http_uring_on "$work/sinew.yaml" "$sx"
  if [ -n "$base_bin" ]; then
    tcp_service_on "$work/base.yaml" tcp_uring "$bu" io_uring
    http_uring_on "$work/base.yaml" "$bx"
  fi
fi
# The bulk response, readable by nginx's unprivileged workers.
mkdir -p "$work/www"
head -c 102400 /dev/urandom >"$work/www/100k"
chmod 755 "$work" "$work/www"
chmod 644 "$work/www/100k"

wait_port() { # port
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on $1" >&2
  return 1
}

nginx -c "$work/nginx.conf" -p "$work" -e "$work/nginx.err"
for _ in $(seq 1 50); do [ -s "$work/nginx.pid" ] && break; sleep 0.05; done
pids+=("$(cat "$work/nginx.pid")")
haproxy -D -p "$work/haproxy.pid" -f "$work/haproxy.cfg"
pids+=("$(cat "$work/haproxy.pid")")
# Its own session, as HAProxy and nginx daemonize into theirs (and as a service manager starts it): sharing
# the script's session would put sinew in wrk's scheduler autogroup, whose CPU weight is split between
# the two CPUs, so the backends would preempt sinew about twice as often as HAProxy.
setsid taskset -c "$proxy_cpus" "$bin" run --config "$work/sinew.yaml" --log-level warn >"$work/sinew.log" 2>&1 &
pids+=("$!")
sinew_pid=$!
if [ -n "$base_bin" ]; then
  setsid taskset -c "$proxy_cpus" "$base_bin" run --config "$work/base.yaml" --log-level warn >"$work/base.log" 2>&1 &
  pids+=("$!")
  base_pid=$!
fi
# E2E_RELAY: the relay on each I/O interface, each in its own session like sinew.
if [ -n "$relay" ]; then
  relay_bin=$PWD/target/release/examples/relay
  relay_backends=(--backend "127.0.0.1:$b1" --backend "127.0.0.1:$b2" --backend "127.0.0.1:$b3")
  setsid taskset -c 0 "$relay_bin" --io epoll --listen "127.0.0.1:$re" "${relay_backends[@]}" >"$work/relay-epoll.log" 2>&1 &
  pids+=("$!")
  epoll_pid=$!
  # shellcheck disable=SC2086 # E2E_RELAY_ARGS is a list of arguments
  setsid taskset -c 0 "$relay_bin" --io uring --listen "127.0.0.1:$ru" "${relay_backends[@]}" ${E2E_RELAY_ARGS:-} \
    >"$work/relay-uring.log" 2>&1 &
  pids+=("$!")
  uring_pid=$!
fi
for p in "$b1" "$b2" "$b3" "$hh" "$ht" "$sh" "$st" ${sockmap:+"$sk"} ${uring:+"$su" "$sx"} ${base_bin:+"$bh" "$bt"} ${base_bin:+${uring:+"$bu" "$bx"}} ${relay:+"$re" "$ru"}; do
  wait_port "$p"
done
for p in "${pids[@]}"; do
  taskset -apc "$proxy_cpus" "$p" >/dev/null
  for c in $(pgrep -P "$p" || true); do taskset -apc "$proxy_cpus" "$c" >/dev/null; done
done

# CPU time (ns) a process has used, all threads: robust to a busy machine where req/s is not.
cpu_ns() {
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f", s}'
}
# Times a process was preempted (involuntary context switches, all threads): on the shared CPU, mostly
# by a backend woken by what the proxy sent it.
preempted() {
  cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^nonvoluntary_ctxt_switches/ {s += $2} END {printf "%.0f", s}'
}
nginx_workers=$(pgrep -P "$(cat "$work/nginx.pid")" | tr '\n' ' ')
nginx_worker=${nginx_workers%% *}
# CPU time (ns) all the backends' workers have used: with the backends on the proxy's CPU, what a proxy
# costs them per request bounds the throughput as much as its own CPU time does.
backends_cpu_ns() {
  local w total=0
  for w in $nginx_workers; do total=$((total + $(cpu_ns "$w"))); done
  echo "$total"
}
if [ -n "${E2E_BACKENDS_BATCH:-}" ]; then
  for c in $nginx_workers; do chrt -b -p 0 "$c"; done
  echo "== nginx workers under SCHED_BATCH"
fi
haproxy_pid=$(cat "$work/haproxy.pid")
# Every proxy timed and counted, in order, as "name port pid" (direct, nginx itself, is timed apart).
targets=("haproxy-http $hh $haproxy_pid" "sinew-http $sh $sinew_pid" "haproxy-tcp $ht $haproxy_pid"
  "sinew-tcp $st $sinew_pid")
[ -z "$sockmap" ] || targets+=("sinew-sockmap $sk $sinew_pid")
[ -z "$uring" ] || targets+=("sinew-uring $su $sinew_pid" "sinew-uring-http $sx $sinew_pid")
[ -z "$relay" ] || targets+=("relay-epoll $re $epoll_pid" "relay-uring $ru $uring_pid")
[ -z "$base_bin" ] || targets+=("base-http $bh $base_pid" "base-tcp $bt $base_pid")
[ -z "$base_bin" ] || [ -z "$uring" ] || targets+=("base-uring $bu $base_pid" "base-uring-http $bx $base_pid")
each_target() { # fn mode: runs `fn name mode port pid path extra-wrk-args...` for every target
  local t name port pid
  for t in "${targets[@]}"; do
    read -r name port pid <<<"$t"
    "$1" "$name" "$2" "$port" "$pid" "$path" "${extra[@]}"
  done
}

# Sets `path` and `extra` (wrk arguments) for a mode: keepalive, close or bulk (100 KB, keep-alive).
mode_args() {
  path=/
  extra=()
  [ "$mode" = close ] && extra=(-H "Connection: close")
  [ "$mode" = bulk ] && path=/100k
  return 0
}
wrk_for() { # seconds port path extra-wrk-args...
  local s=$1 port=$2 path=$3
  shift 3
  taskset -c "$load_cpus" timeout $((s + 15)) wrk -t1 -c64 -d"${s}s" --latency "$@" "http://127.0.0.1:$port$path" 2>&1 || true
}

results=$work/results.tsv
: >"$results"
run() { # name mode port pid path extra-wrk-args...
  local name=$1 mode=$2 port=$3 pid=$4 path=$5 out before after backends
  shift 5
  before=$(cpu_ns "$pid")
  backends=$(backends_cpu_ns)
  switched=$(preempted "$pid")
  out=$(wrk_for "$secs" "$port" "$path" "$@")
  after=$(cpu_ns "$pid")
  backends=$(($(backends_cpu_ns) - backends))
  switched=$(($(preempted "$pid") - switched))
  printf '%s\t%s\t%s\n' "$name" "$mode" \
    "$(python3 "$here/wrk_parse.py" $((after - before)) "$switched" "$backends" <<<"$out")" >>"$results"
}
if [[ " $passes " == *" throughput "* ]]; then
  echo "== $rounds rounds x ${secs}s cells"
  for r in $(seq 1 "$rounds"); do
    for mode in $modes; do
      mode_args
      [ "$mode" = bulk ] || run direct "$mode" "$b1" "$nginx_worker" "$path" "${extra[@]}"
      each_target run "$mode"
    done
    echo "   round $r done"
  done
fi

# System calls per request: counted in the kernel by the syscall tracepoints (no per-call cost in the
# traced process, unlike strace), with both proxies measured the same way, in a pass of its own.
syscalls=$work/syscalls.tsv
: >"$syscalls"
calls=(accept4 connect socket close shutdown setsockopt getsockopt getsockname getpeername fcntl
  read write readv writev recvfrom sendto recvmsg sendmsg epoll_wait epoll_pwait epoll_pwait2 epoll_ctl
  clock_gettime futex sched_yield brk mmap munmap madvise io_uring_enter)
events=raw_syscalls:sys_enter
for c in "${calls[@]}"; do events+=",syscalls:sys_enter_$c"; done
count() { # name mode port pid path extra-wrk-args...
  local name=$1 mode=$2 port=$3 pid=$4 path=$5 perf out
  shift 5
  perf stat -x, -o "$work/perf.out" -e "$events" -p "$pid" 2>/dev/null &
  perf=$!
  sleep 0.5
  out=$(wrk_for "$syscall_secs" "$port" "$path" "$@")
  kill -INT "$perf"
  wait "$perf" || true
  python3 "$here/syscalls.py" "$name" "$mode" "$work/perf.out" <<<"$out" >>"$syscalls"
}
if [[ " $passes " == *" syscalls "* ]]; then
  if command -v perf >/dev/null && perf stat -e "$events" -- true >/dev/null 2>&1; then
    echo "== system calls per request: ${syscall_secs}s cells"
    for mode in $modes; do
      mode_args
      each_target count "$mode"
    done
  else
    echo "== system calls per request: skipped (needs perf and the syscall tracepoints, as root)"
  fi
fi

memory=()
if [[ " $passes " == *" memory "* ]]; then
  echo "== memory"
  rss_busy=$(awk '/VmRSS/{print $2}' "/proc/$sinew_pid/status")
  # RSS growth per idle keep-alive client connection (one request answered on each), both proxies.
  idle_conns=2000
  idle() { # pid http-port tcp-port
    timeout 120 python3 "$here/idle_conns.py" "$1" "$idle_conns" "$2" "$3" || echo "-1 -1"
  }
  read -r idle_hap_http idle_hap_tcp < <(idle "$haproxy_pid" "$hh" "$ht")
  sleep 1
  read -r idle_sinew_http idle_sinew_tcp < <(idle "$sinew_pid" "$sh" "$st")
  python3 "$here/many_services.py" "$work/many.yaml" "$ra"
  # Idle RSS of the 100-service config: as built (arena memory committed as used), and with mimalloc's
  # own default of committing each arena whole.
  many_rss() { # env assignments...
    env "$@" "$bin" run --config "$work/many.yaml" --log-level warn >"$work/many.log" 2>&1 &
    local many=$!
    pids+=("$many")
    wait_port "$ra" >&2
    sleep 2
    awk '/VmRSS/{print $2}' "/proc/$many/status"
    kill "$many"
    wait "$many" 2>/dev/null || true
  }
  rss_many=$(many_rss SINEW_E2E=1)
  rss_eager=$(many_rss MIMALLOC_ARENA_EAGER_COMMIT=2)
  memory=("$rss_busy" "$rss_many" "$rss_eager" "$idle_conns" "$idle_hap_http" "$idle_sinew_http" "$idle_hap_tcp" "$idle_sinew_tcp")
fi

[ -z "$relay" ] || head -1 "$work/relay-uring.log"
python3 "$here/report.py" "$results" "$syscalls" "${memory[@]}"
echo "threads: $threads per proxy on CPUs $proxy_cpus, wrk on CPUs $load_cpus"
echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo); haproxy $(haproxy -v | awk 'NR==1{print $3}'); $(nginx -v 2>&1)"
