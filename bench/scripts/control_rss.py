#!/usr/bin/env python3
# Peak RSS of vswitchd under N parallel 8 MiB control requests (README § Security model). As root:
#   python3 bench/scripts/control_rss.py target/debug/vswitchd 8
# Starts `vswitchd run` (no ports) in a namespace of its own (hrssPID), sends N `apply` lines of 8 MiB made of
# `{}` elements (the JSON shape with the largest tree per byte) at once, prints VmRSS before and VmHWM after, and
# the distinct answers; then SIGTERM and deletes the namespace. Clients refused `too_large` see their sends fail
# (the server closes them) and print a BrokenPipe traceback: expected.
import os, socket, subprocess, sys, threading, time, signal
ns = f"hrss{os.getpid()}"
sock = f"/tmp/{ns}/ctl.sock"
subprocess.run(["ip", "netns", "add", ns], check=True)
os.makedirs(os.path.dirname(sock), exist_ok=True)
try:
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.argv[1], "run", "--socket", sock],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        if os.path.exists(sock): break
        time.sleep(0.05)
    def status(k):
        for l in open(f"/proc/{p.pid}/status"):
            if l.startswith(k): return l.split()[1]
    base = status("VmRSS:")
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    size = 8 * 1024 * 1024 - 100
    head = b'{"version":1,"id":1,"op":"apply","config":{"network":['
    body = b'{},' * ((size - len(head) - 10) // 3)
    line = head + body + b'{}]}}\n'
    results = []
    def client():
        s = socket.socket(socket.AF_UNIX); s.connect(sock)
        s.sendall(line)
        f = s.makefile("rb"); r = f.readline(); results.append(r[:120])
    ts = [threading.Thread(target=client) for _ in range(n)]
    t0 = time.time()
    for t in ts: t.start()
    for t in ts: t.join()
    print("clients", n, "line bytes", len(line), "took %.1fs" % (time.time() - t0))
    print("VmRSS before (kB)", base, "VmHWM after (kB)", status("VmHWM:"))
    for r in sorted(set(results)): print(results.count(r), r)
    p.send_signal(signal.SIGTERM); p.wait(timeout=10)
finally:
    subprocess.run(["ip", "netns", "del", ns])
