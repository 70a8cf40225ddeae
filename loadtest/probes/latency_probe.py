#!/usr/bin/env python3
"""Idle-latency probe: one subscriber, one publisher, a message every 100 ms; prints p50 of
publish->message, a core-only round trip (an invalid frame answered by the core) and
publish->ack. Usage: latency_probe.py PORT (broker started with --jwt-secret S; needs the
ringcast binary: $RINGCAST, default target/release/ringcast)."""
import socket, base64, os, json, subprocess, time, sys
port=int(sys.argv[1])
RINGCAST=os.environ.get("RINGCAST", "target/release/ringcast")
tok = subprocess.check_output([RINGCAST,"token","--secret","S","--sub","u1","--role","project_admin"]).decode().strip()
def conn():
    s = socket.create_connection(("127.0.0.1",port)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    s.send(f"GET /realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    buf=b''
    while b'\r\n\r\n' not in buf: buf+=s.recv(4096)
    return s
def send(s,obj):
    d = json.dumps(obj).encode(); mask = os.urandom(4)
    hdr = bytes([0x81, 0x80 | len(d)]) if len(d) < 126 else bytes([0x81, 0xFE]) + len(d).to_bytes(2,"big")
    s.send(hdr + mask + bytes(b ^ mask[i%4] for i,b in enumerate(d)))
def recv(s):
    h=s.recv(2); n=h[1]&127
    if n==126: n=int.from_bytes(s.recv(2),'big')
    d=b''
    while len(d)<n: d+=s.recv(n-len(d))
    return json.loads(d)
a=conn(); send(a,{"type":"auth","token":tok}); print(recv(a)['type'])
# create channel
import urllib.request
req=urllib.request.Request(f"http://127.0.0.1:{port}/api/realtime/channels", data=json.dumps({"pattern":"l:*"}).encode(), headers={"Authorization":"Bearer "+tok,"Content-Type":"application/json"}, method="POST")
try: urllib.request.urlopen(req).read()
except Exception as e: print(e)
send(a,{"type":"subscribe","channel":"l:1"}); print(recv(a)['type'])
p=conn(); send(p,{"type":"auth","token":tok}); recv(p)
lat=[]; ack=[]
for i in range(20):
    t=time.perf_counter(); send(p,{"type":"publish","channel":"l:1","event":"e","payload":{"i":i}})
    m=recv(a); t1=time.perf_counter(); r=recv(p); t2=time.perf_counter()
    lat.append((t1-t)*1000); ack.append((t2-t)*1000)
    time.sleep(0.1)
lat.sort(); print("deliver ms p50 %.3f max %.3f"%(lat[10],lat[-1]), "ack(after msg) ms p50 %.3f"%sorted(ack)[10])
# core-only round trip: an invalid message answered by the core itself
rt=[]
for i in range(20):
    t=time.perf_counter(); send(p,{"type":"bogus"}); r=recv(p); rt.append((time.perf_counter()-t)*1000); time.sleep(0.05)
rt.sort(); print("core-only error RTT ms p50 %.3f"%rt[10], r.get('code'))
# publish -> ack only, no subscribers on that channel
send(a,{"type":"unsubscribe","channel":"l:1"}); print(recv(a)['type'])
at=[]
for i in range(20):
    t=time.perf_counter(); send(p,{"type":"publish","channel":"l:2","event":"e","payload":{"i":i}}); r=recv(p); at.append((time.perf_counter()-t)*1000); time.sleep(0.05)
at.sort(); print("publish->ack (no subs) ms p50 %.3f"%at[10], r['type'])
