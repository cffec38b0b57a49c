"""Tiny client probes run inside pod namespaces (python one-liners, no extra tools)."""

from __future__ import annotations

import sys

TCP_HELLO = (
    "import socket,sys;s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=3);"
    "print(s.makefile().readline().strip())"
)
UDP_ECHO = (
    "import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(3);"
    "s.sendto(b'ping',(sys.argv[1],int(sys.argv[2])));print(s.recv(2048).decode())"
)
# Holds one TCP connection and echoes a line every 0.1 s for argv[3] seconds; prints
# "ok N" or "broken after N: <error>" so a test can tell whether a flow survived.
TCP_HOLD = """
import socket,sys,time
s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=30)
f=s.makefile('rwb'); f.readline(); n=0; end=time.time()+float(sys.argv[3])
try:
    while time.time()<end:
        f.write(b'x%d\\n'%n); f.flush()
        if f.readline()!=b'x%d\\n'%n: raise RuntimeError('bad echo')
        n+=1; time.sleep(0.1)
    print('ok',n)
except Exception as e:
    print('broken after',n,':',e)
"""


def tcp_hello(ip: str, port: int) -> list[str]:
    return [sys.executable, "-c", TCP_HELLO, ip, str(port)]


def udp_echo(ip: str, port: int) -> list[str]:
    return [sys.executable, "-c", UDP_ECHO, ip, str(port)]


def ping(ip: str, count: int = 2, size: int | None = None, df: bool = False) -> list[str]:
    argv = ["ping", "-c", str(count), "-W", "1", "-i", "0.2"]
    if size is not None:
        argv += ["-s", str(size)]
    if df:
        argv += ["-M", "do"]
    return [*argv, ip]
