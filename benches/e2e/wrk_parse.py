"""Reads wrk --latency output on stdin; prints req/s, p50 ms, p99 ms, errors, CPU us per request,
preemptions per request and the backends' CPU us per request.

usage: wrk_parse.py CPU_NS PREEMPTED BACKENDS_NS (the CPU time the measured process used during the run,
how many times it was preempted, and the CPU time the backends used)
"""
import re
import sys

text = sys.stdin.read()


def ms(value):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        return float("nan")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]
    return float(m.group(1)) * scale


rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
errors = 0
for m in re.finditer(r"(connect|read|write|timeout) (\d+)", text):
    errors += int(m.group(2))
total = re.search(r"(\d+) requests in", text)
requests = max(int(total.group(1)) if total else 0, 1)
cpu_us = int(sys.argv[1]) / 1000 / requests
preempted = int(sys.argv[2]) / requests
backends_us = int(sys.argv[3]) / 1000 / requests
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if non2xx:
    errors += int(non2xx.group(1))
print(
    "\t".join(
        [
            rps.group(1) if rps else "0",
            f"{ms(p50.group(1)):.3f}" if p50 else "nan",
            f"{ms(p99.group(1)):.3f}" if p99 else "nan",
            str(errors),
            f"{cpu_us:.2f}",
            f"{preempted:.3f}",
            f"{backends_us:.2f}",
        ]
    )
)
