"""Memory a proxy holds per idle keep-alive client connection, in HTTP and in TCP mode.

usage: idle_conns.py PID COUNT HTTP_PORT TCP_PORT
Opens COUNT connections to 127.0.0.1:HTTP_PORT, sends one keep-alive `GET /` on each and reads its
answer, and notes how much the RSS of process PID grew; then, with those still open, does the same on
TCP_PORT. Prints the growth per connection in bytes for each port. Holding the first set open while the
second is measured keeps one mode from reusing the memory the other freed. Every connection closes when
the script exits; every connect and read has a timeout.
"""
import resource
import socket
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit(f"no RSS for process {pid}")


def hold(port, count):
    """Opens `count` connections to `port`, each with one request answered; returns them."""
    conns = []
    for _ in range(count):
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        c.sendall(REQUEST)
        conns.append(c)
    for c in conns:
        answer = b""
        while not answer.endswith(b"ok\n"):
            chunk = c.recv(4096)
            if not chunk:
                raise SystemExit(f"port {port}: a connection closed before its answer")
            answer += chunk
    return conns


def main():
    pid, count = int(sys.argv[1]), int(sys.argv[2])
    ports = [int(p) for p in sys.argv[3:]]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = count * len(ports) + 64
    if soft < need <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    held, grown = [], []
    for port in ports:
        before = rss_kib(pid)
        held += hold(port, count)
        time.sleep(1)
        grown.append(max(rss_kib(pid) - before, 0) * 1024 // count)
    print(" ".join(str(g) for g in grown))
    for c in held:
        c.close()


main()
