"""The local Ray instance a study starts listens on 127.0.0.1 only: every port of every Ray process.

Checked from the kernel's socket tables (/proc/net/tcp, tcp6) for the driver and every process it
started (GCS, raylet, agents, workers), while a task has run on a worker; with the address of another cluster
(one `ray start` would leave) in Ray's temp dir, which the study does not join.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from study.local_ray import free_port

ROOT = Path(__file__).resolve().parent.parent

PROBE = textwrap.dedent("""
    import json, os, socket, struct
    from pathlib import Path

    from study.local_ray import init_ray, keep_local_ray_on_loopback, stop_ray

    assert keep_local_ray_on_loopback(None, "127.0.0.1")  # as study/run.py does, before ray is imported
    import ray

    def listening():
        '''inode -> "ip:port" of every listening TCP socket (IPv4 and IPv6) of the machine.'''
        out = {}
        for name, v6 in (("tcp", False), ("tcp6", True)):
            for line in Path("/proc/net", name).read_text().splitlines()[1:]:
                f = line.split()
                if f[3] != "0A":  # LISTEN
                    continue
                addr, port = f[1].split(":")
                raw = bytes.fromhex(addr)
                if v6:
                    ip = socket.inet_ntop(socket.AF_INET6, b"".join(struct.pack("<I", w) for w in
                                                                     struct.unpack(">4I", raw)))
                else:
                    ip = socket.inet_ntoa(struct.pack("<I", int(addr, 16)))
                out[f[9]] = f"{ip}|{int(port, 16)}"
        return out

    def family(root):
        '''root and all its descendants.'''
        parents = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    stat = (d / "stat").read_text()
                except OSError:
                    continue
                parents[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        found, todo = {root}, [root]
        while todo:
            p = todo.pop()
            kids = [c for c, pp in parents.items() if pp == p and c not in found]
            found.update(kids)
            todo.extend(kids)
        return found

    def sockets_of(pids):
        inodes = {}
        for pid in pids:
            try:
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes[target[8:-1]] = pid
            except OSError:
                continue
        return inodes

    started = init_ray(None)
    assert started
    node_ip = ray.util.get_node_ip_address()
    assert ray.get(ray.remote(lambda: 1 + 1).remote()) == 2  # a worker process exists and has served a task
    table, mine = listening(), sockets_of(family(os.getpid()))
    found = []
    for inode, pid in mine.items():
        if inode in table:
            ip, port = table[inode].split("|")
            name = Path(f"/proc/{pid}/comm").read_text().strip() if Path(f"/proc/{pid}/comm").exists() else "?"
            found.append({"pid": pid, "process": name, "ip": ip, "port": int(port)})
    stop_ray()
    print("LOOPBACK " + json.dumps({"node_ip": node_ip, "sockets": found}))
""")


@pytest.mark.cluster
@pytest.mark.skipif(not Path("/proc/net/tcp").is_file(), reason="reads Linux's /proc socket tables")
def test_local_ray_instance_listens_on_loopback_only(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    env["PYTHONPATH"] = str(ROOT)
    # A cluster started with `ray start` on this machine leaves its address in Ray's temp dir, where a plain
    # ray.init() would join it: the study's instance is a new one all the same. A private temp dir (short: Ray's
    # socket paths stay under 108 bytes) holds such an address, of a port nothing listens on.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rl-", dir="/tmp"))
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}\n", encoding="ascii")
    env["RAY_TMPDIR"] = str(ray_tmp)
    try:
        proc = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("LOOPBACK "))
    result = json.loads(line[len("LOOPBACK "):])
    assert result["node_ip"] == "127.0.0.1"
    names = {s["process"] for s in result["sockets"]}
    assert {"gcs_server", "raylet"} <= names, result["sockets"]  # the check saw Ray's own servers
    exposed = [s for s in result["sockets"] if s["ip"] not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
    assert not exposed, exposed


def test_only_a_private_local_instance_is_kept_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    from study.local_ray import LOOPBACK_ENV, keep_local_ray_on_loopback

    monkeypatch.delenv(LOOPBACK_ENV, raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)  # the function may set it (restored after the test)
    # Joining a cluster, or a local instance other machines may reach: Ray's default (it refuses worker nodes
    # started with the variable at 0).
    assert not keep_local_ray_on_loopback("10.0.0.5:6379", "127.0.0.1")
    assert not keep_local_ray_on_loopback(None, "0.0.0.0")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert not keep_local_ray_on_loopback(None, "127.0.0.1")
    assert LOOPBACK_ENV not in os.environ
    monkeypatch.delenv("RAY_ADDRESS")
    assert keep_local_ray_on_loopback(None, "127.0.0.1") and os.environ[LOOPBACK_ENV] == "0"
