"""Round trip to a backend over loopback TCP and over a Unix socket, directly and through sinew.

usage: python3 benches/e2e/unix_rtt.py SINEW_BINARY [ROUND_TRIPS]

An echo backend listens on both a loopback port and a Unix socket; one client connection sends one
byte and waits for it back, ROUND_TRIPS times (default 20000), once per path. Sequential, so this is
latency, not throughput. Prints the median and p99 of each in microseconds. Everything it starts it
stops by PID.
"""
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

binary = sys.argv[1]
trips = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
work = tempfile.mkdtemp(prefix="sinew-unix-rtt.")
sock_path = os.path.join(work, "echo.sock")


def echo(listener):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def serve(conn):
    while True:
        data = conn.recv(64)
        if not data:
            conn.close()
            return
        conn.sendall(data)


tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tcp.bind(("127.0.0.1", 0))
tcp.listen(16)
unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
unix.bind(sock_path)
unix.listen(16)
for listener in (tcp, unix):
    threading.Thread(target=echo, args=(listener,), daemon=True).start()
tcp_port = tcp.getsockname()[1]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


via_tcp, via_unix, admin = free_port(), free_port(), free_port()
config = os.path.join(work, "sinew.yaml")
with open(config, "w") as f:
    f.write(
        f"admin: {{ listen: 127.0.0.1:{admin} }}\nservices:\n"
        f"  tcp: {{ listen: 127.0.0.1:{via_tcp}, backends: [127.0.0.1:{tcp_port}] }}\n"
        f"  unix: {{ listen: 127.0.0.1:{via_unix}, backends: [\"unix:{sock_path}\"] }}\n"
    )
sinew = subprocess.Popen([binary, "run", "--config", config, "--log-level", "warn"])


def connect(family, address):
    for _ in range(100):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.connect(address)
            if family == socket.AF_INET:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s
        except OSError:
            s.close()
            time.sleep(0.05)
    raise SystemExit(f"cannot connect to {address}")


def measure(family, address):
    s = connect(family, address)
    samples = []
    for _ in range(trips):
        start = time.perf_counter_ns()
        s.sendall(b"x")
        if s.recv(64) != b"x":
            raise SystemExit("echo lost a byte")
        samples.append(time.perf_counter_ns() - start)
    s.close()
    samples.sort()
    return statistics.median(samples) / 1000, samples[int(len(samples) * 0.99)] / 1000


try:
    rows = [
        ("direct, loopback TCP", measure(socket.AF_INET, ("127.0.0.1", tcp_port))),
        ("direct, Unix socket", measure(socket.AF_UNIX, sock_path)),
        ("sinew -> loopback TCP", measure(socket.AF_INET, ("127.0.0.1", via_tcp))),
        ("sinew -> Unix socket", measure(socket.AF_INET, ("127.0.0.1", via_unix))),
    ]
    print(f"{trips} sequential 1-byte round trips each")
    print(f"{'path':<24}{'p50 us':>9}{'p99 us':>9}")
    for name, (p50, p99) in rows:
        print(f"{name:<24}{p50:>9.1f}{p99:>9.1f}")
finally:
    sinew.terminate()
    sinew.wait(timeout=10)
    os.unlink(sock_path)
    os.unlink(config)
    os.rmdir(work)
