#!/usr/bin/env python3
"""Publisher for redis_fanout.py: PUBLISH at a fixed rate, one command per send, for DURATION s
after a start signal on stdin; prints {"published","acks","bad"} as JSON."""
import json, socket, sys, time
port, ch, rate, size, duration, subs = int(sys.argv[1]), sys.argv[2].encode(), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
def resp(*args):
    out = b'*%d\r\n' % len(args)
    for x in args: out += b'$%d\r\n%s\r\n' % (len(x), x)
    return out
s = socket.create_connection(('127.0.0.1', port)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
sys.stdin.readline()
t0 = time.monotonic(); seq = 0; buf = b''; acks = bad = 0
s.settimeout(0.0)
while True:
    now = time.monotonic()
    if now - t0 >= duration: break
    due = t0 + seq / rate
    if now < due: time.sleep(due - now); continue
    seq += 1
    p = b'{"ts":%d,"seq":%d,"pad":"' % (time.time_ns(), seq)
    s.sendall(resp(b'PUBLISH', ch, p + b'x' * max(0, size - len(p) - 2) + b'"}'))
    try: buf += s.recv(65536)
    except BlockingIOError: pass
s.settimeout(10)
while buf.count(b'\r\n') < seq:
    d = s.recv(65536)
    if not d: break
    buf += d
for l in buf.split(b'\r\n')[:-1]:
    acks += 1; bad += l != b':%d' % subs
print(json.dumps(dict(published=seq, acks=acks, bad=bad)), flush=True)
