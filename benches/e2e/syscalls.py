"""Turns `perf stat -x,` counts of system call tracepoints, taken while wrk ran against one process,
into system calls per request.

usage: syscalls.py NAME MODE PERF_OUTPUT < wrk-output
Prints one tab-separated line: NAME, MODE, requests, all system calls per request, then
`call=per-request` for each call counted at least once per 100 requests.
"""
import re
import sys

name, mode, perf_out = sys.argv[1:4]
total = re.search(r"(\d+) requests in", sys.stdin.read())
requests = int(total.group(1)) if total else 0
counts = {}
with open(perf_out) as f:
    for line in f:
        fields = line.strip().split(",")
        if len(fields) < 3 or not fields[0].isdigit():
            continue
        event = fields[2]
        if event == "raw_syscalls:sys_enter":
            counts["all"] = int(fields[0])
        elif event.startswith("syscalls:sys_enter_"):
            counts[event.removeprefix("syscalls:sys_enter_")] = int(fields[0])
if requests == 0 or "all" not in counts:
    print(f"{name}\t{mode}\t{requests}\tnan")
    sys.exit(0)
per = {k: v / requests for k, v in counts.items()}
calls = sorted((k for k in per if k != "all" and per[k] >= 0.01), key=lambda k: -per[k])
print("\t".join([name, mode, str(requests), f"{per['all']:.2f}"] + [f"{k}={per[k]:.2f}" for k in calls]))
