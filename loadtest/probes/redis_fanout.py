#!/usr/bin/env python3
"""Redis pub/sub fan-out probe: N raw subscriber sockets + 1 publisher at a fixed rate, one
epoll loop. Counts deliveries per subscriber, checks seq order, latency = receive wall clock
minus the payload's ts (unix ns), and Redis CPU%/RSS from /proc/PID. Loopback only, bounded."""
import json, os, re, select, socket, sys, time, argparse

ap = argparse.ArgumentParser()
ap.add_argument('--port', type=int, default=6390)
ap.add_argument('--subs', type=int, default=1000)
ap.add_argument('--rate', type=float, default=100)
ap.add_argument('--size', type=int, default=100)
ap.add_argument('--duration', type=float, default=10)
ap.add_argument('--drain', type=float, default=10)
ap.add_argument('--server-pid', type=int, required=True)
ap.add_argument('--pub-cpu', default='0', help='core for the separate publisher process')
a = ap.parse_args()
HOST = '127.0.0.1'
CH = b'lt:redis:%d' % time.time_ns()
TCK = os.sysconf('SC_CLK_TCK')

def proc(pid):
    f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    ut, st = int(f[11]), int(f[12])
    rss = next(int(l.split()[1]) * 1024 for l in open(f'/proc/{pid}/status') if l.startswith('VmRSS'))
    return ut / TCK, st / TCK, rss

def machine():
    v = list(map(int, open('/proc/stat').readline().split()[1:]))
    return sum(v), v[3] + v[4]

def resp(*args):
    out = b'*%d\r\n' % len(args)
    for x in args:
        out += b'$%d\r\n%s\r\n' % (len(x), x)
    return out

subs = []
for i in range(a.subs):
    s = socket.socket()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # one source address: Redis's protected mode refuses clients other than 127.0.0.1
    s.settimeout(5)
    s.connect((HOST, a.port))
    s.sendall(resp(b'SUBSCRIBE', CH))
    got = b''
    while not got.endswith(b':1\r\n'):
        got += s.recv(4096)
    s.setblocking(False)
    subs.append(s)
import subprocess
# The publisher is its own process on --pub-cpu, so that its timing does not depend on this
# (busy) subscriber loop: one PUBLISH per send at the fixed rate.
pub = subprocess.Popen(['taskset', '-c', a.pub_cpu, sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'redis_pub.py'),
                        str(a.port), CH.decode(), str(a.rate), str(a.size), str(a.duration), str(a.subs)],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
time.sleep(0.3)
ep = select.epoll()
fdmap = {}
for i, s in enumerate(subs):
    ep.register(s.fileno(), select.EPOLLIN); fdmap[s.fileno()] = i
left = [b''] * a.subs
last = [0] * a.subs
count = [0] * a.subs
gaps = reord = 0
lat = []  # microseconds
rx = re.compile(rb'\{"ts":(\d+),"seq":(\d+),"pad":"x*"\}\r\n')
s0, m0, me0 = proc(a.server_pid), machine(), os.times()
t0 = time.monotonic(); end = t0 + a.duration; pub_end = None; deadline = None
pub.stdin.write('go\n'); pub.stdin.flush()
expected = None; acks = bad_receivers = seq = 0
while True:
    now = time.monotonic()
    if now < end:
        timeout = min(0.05, end - now)
    else:
        if pub_end is None:
            res = json.loads(pub.stdout.readline()); pub.wait()
            seq, acks, bad_receivers = res['published'], res['acks'], res['bad']
            pub_end = time.monotonic(); deadline = pub_end + a.drain; expected = seq
        if all(c >= seq for c in count) or now >= deadline:
            break
        timeout = 0.01
    for fd, _ in ep.poll(timeout):
        i = fdmap[fd]
        d = subs[i].recv(262144)
        tr = time.time_ns()
        buf = left[i] + d if left[i] else d
        e = 0
        for m in rx.finditer(buf):
            sq = int(m.group(2))
            if sq == last[i] + 1: last[i] = sq
            elif sq > last[i]: gaps += sq - last[i] - 1; last[i] = sq
            else: reord += 1
            count[i] += 1
            lat.append((tr - int(m.group(1))) // 1000)
            e = m.end()
        left[i] = buf[e:]
stop = time.monotonic()
s1, m1, me1 = proc(a.server_pid), machine(), os.times()
secs = stop - t0
delivered = sum(count)
lost = sum(max(0, expected - c) for c in count)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] / 1000 if lat else None
cpu = (s1[0] + s1[1] - s0[0] - s0[1]) / secs * 100
r = dict(mode='redis-fanout', subs=a.subs, rate=a.rate, size=a.size, duration_s=a.duration,
         published=seq, acked=acks, bad_receiver_counts=bad_receivers, delivered=delivered,
         expected=expected * a.subs, lost=lost, gaps=gaps, reordered=reord,
         deliveries_per_sec=delivered / secs,
         latency_ms=dict(p50=q(.5), p90=q(.9), p99=q(.99), p999=q(.999), max=lat[-1] / 1000 if lat else None),
         server_cpu_pct=cpu, server_cpu_sys_pct=(s1[1] - s0[1]) / secs * 100,
         server_cpu_us_per_msg=(s1[0] + s1[1] - s0[0] - s0[1]) * 1e6 / max(1, delivered),
         server_rss_bytes=s1[2],
         client_cpu_pct=((me1.user + me1.system) - (me0.user + me0.system)) / secs * 100,
         machine_cpu_pct=100 * os.cpu_count() * (1 - (m1[1] - m0[1]) / (m1[0] - m0[0])),
         ok=lost == 0 and gaps == 0 and reord == 0 and bad_receivers == 0)
r['other_cpu_pct'] = max(0, r['machine_cpu_pct'] - r['server_cpu_pct'] - r['client_cpu_pct'])
print(json.dumps(r))
for s in subs: s.close()
