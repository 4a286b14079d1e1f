"""Writes a sinew config with 100 services of 10 backends each (half TCP, half HTTP mode).

usage: many_services.py OUT ADMIN_PORT. Listen ports are free loopback ports; the backends are loopback
addresses nothing listens on, which is enough to measure the cost of configured state at rest.
"""
import socket
import sys

out, admin = sys.argv[1], sys.argv[2]
socks = []
for _ in range(100):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
lines = [f"admin: {{ listen: '127.0.0.1:{admin}' }}", "services:"]
for i, s in enumerate(socks):
    lines.append(f"  svc{i}:")
    lines.append(f"    listen: '127.0.0.1:{s.getsockname()[1]}'")
    lines.append(f"    mode: {'http' if i % 2 else 'tcp'}")
    lines.append("    backends:")
    for j in range(10):
        lines.append(f"      - '127.1.{i}.{j + 1}:8080'")
for s in socks:
    s.close()
with open(out, "w") as f:
    f.write("\n".join(lines) + "\n")
