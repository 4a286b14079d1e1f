"""Prints the median of each (target, mode) over rounds, the sinew/HAProxy ratios (and the
relay/HAProxy and io_uring/epoll ratios when the relay rows are there), the system calls each proxy makes per request, and the memory figures.

usage: report.py RESULTS SYSCALLS [RSS_BUSY RSS_MANY RSS_LAZY IDLE_COUNT HAP_HTTP SINEW_HTTP HAP_TCP SINEW_TCP]
"""
import statistics
import sys
from collections import defaultdict

MODES = ("keepalive", "close", "bulk")

cells = defaultdict(list)
with open(sys.argv[1]) as f:
    for line in f:
        name, mode, rps, p50, p99, errors, cpu, switched, backends = line.rstrip("\n").split("\t")
        cells[(name, mode)].append(
            (
                float(rps),
                float(p50),
                float(p99),
                int(errors),
                float(cpu),
                float(switched),
                float(backends),
            )
        )

# (target, mode) -> (all calls per request, {call: per request})
syscalls = {}
with open(sys.argv[2]) as f:
    for line in f:
        name, mode, _requests, total, *calls = line.rstrip("\n").split("\t")
        syscalls[(name, mode)] = (
            float(total),
            {k: float(v) for k, v in (c.split("=") for c in calls)},
        )


def median(name, mode, i):
    return statistics.median(r[i] for r in cells[(name, mode)])


def calls_per_request(name, mode):
    return f"{syscalls[(name, mode)][0]:.2f}" if (name, mode) in syscalls else "n/a"


def ratio_table(title, pairs):
    """Prints, per mode, the ratios of each (label, target, reference) pair: req/s, p99, CPU per
    request, and system calls per request where both were counted."""
    print()
    print(f"{title:<14}{'mode':<11}{'req/s':>10}{'p99':>9}{'CPU/req':>10}{'syscalls/req':>14}")
    for label, a, b in pairs:
        for mode in MODES:
            if (a, mode) in cells and (b, mode) in cells:
                rps = median(a, mode, 0) / max(median(b, mode, 0), 1e-9)
                p99 = median(a, mode, 2) / max(median(b, mode, 2), 1e-9)
                cpu = median(a, mode, 4) / max(median(b, mode, 4), 1e-9)
                calls = "n/a"
                if (a, mode) in syscalls and (b, mode) in syscalls:
                    calls = f"{syscalls[(a, mode)][0] / max(syscalls[(b, mode)][0], 1e-9):.2f}"
                print(f"{label:<14}{mode:<11}{rps:>10.2f}{p99:>9.2f}{cpu:>10.2f}{calls:>14}")


if cells:
    print()
    print(
        f"{'target':<18}{'mode':<11}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'rounds':>8}"
        f"{'CPU us/req':>12}{'preempted/req':>15}{'syscalls/req':>14}{'backends us/req':>17}"
    )
    for (name, mode), rows in cells.items():
        print(
            f"{name:<18}{mode:<11}{median(name, mode, 0):>10.0f}{median(name, mode, 1):>9.3f}"
            f"{median(name, mode, 2):>9.3f}{sum(r[3] for r in rows):>8}{len(rows):>8}"
            f"{median(name, mode, 4):>12.2f}{median(name, mode, 5):>15.2f}"
            f"{calls_per_request(name, mode):>14}{median(name, mode, 6):>17.2f}"
        )
    fastpaths = [(path, f"sinew-{path}", "haproxy-tcp") for path in ("uring", "sockmap")]
    fastpaths.append(("uring-http", "sinew-uring-http", "haproxy-http"))
    ratio_table(
        "sinew/HAProxy",
        [(proto, f"sinew-{proto}", f"haproxy-{proto}") for proto in ("http", "tcp")]
        + [row for row in fastpaths if any(name == row[1] for name, _ in cells)],
    )
    if any(name == "sinew-uring" for name, _ in cells):
        ratio_table(
            "io_uring/copy",
            [("tcp", "sinew-uring", "sinew-tcp"), ("http", "sinew-uring-http", "sinew-http")],
        )
    if any(name.startswith("relay-") for name, _ in cells):
        ratio_table("relay/HAProxy", [(io, f"relay-{io}", "haproxy-tcp") for io in ("epoll", "uring")])
        ratio_table("uring/epoll", [("relay", "relay-uring", "relay-epoll")])
    if any(name.startswith("base-") for name, _ in cells):
        ratio_table(
            "sinew/base",
            [(row, f"sinew-{row}", f"base-{row}") for row in ("http", "tcp", "uring", "uring-http")],
        )

if syscalls:
    print()
    print("system calls per request (perf stat on the syscall tracepoints; calls made at least 0.01 times):")
    for (name, mode), (total, calls) in syscalls.items():
        listed = " ".join(f"{k} {v:.2f}" for k, v in calls.items())
        print(f"  {name:<13}{mode:<10}{total:>7.2f}  {listed}")

if len(sys.argv) > 3:
    print()
    print(f"sinew RSS after the load above: {int(sys.argv[3]) / 1024:.1f} MiB")
    print(f"sinew RSS with 100 services x 10 backends, idle: {int(sys.argv[4]) / 1024:.1f} MiB")
    print(
        f"  the same with MIMALLOC_ARENA_EAGER_COMMIT=2 (mimalloc's default, not sinew's): "
        f"{int(sys.argv[5]) / 1024:.1f} MiB"
    )
    idle_count = int(sys.argv[6])
    print(f"RSS growth per idle keep-alive client connection ({idle_count} held open, one request each):")

    def per_conn(value):
        return f"{int(value):>7,} B" if value.lstrip("-").isdigit() and int(value) >= 0 else "    n/a"

    for proto, hap, sinew in (("http", sys.argv[7], sys.argv[8]), ("tcp", sys.argv[9], sys.argv[10])):
        print(f"  {proto:<5} HAProxy {per_conn(hap)}   sinew {per_conn(sinew)}")
