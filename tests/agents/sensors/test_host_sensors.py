"""The polling/inotify host sensors against the real kernel of this machine (no Kafka, no mocks).

Each test runs a sensor's events() in a thread (tests/agents/sensors/helpers.py), does something
real (runs a program, writes files, opens sockets) and asserts the contents of the events, which
must also satisfy contracts/event.schema.json once completed the way the agent completes them.
Waits are generous (the 2-core CI machine may be busy) except where the brief bounds latency.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import random
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from agents.sensors import create
from agents.sensors.base import Event, SensorUnavailable
from agents.sensors.inotify import InotifySensor
from agents.sensors.netconn import NetconnSensor, Sock, read_diag, read_proc_net
from agents.sensors.procfs import ProcfsSensor
from tests.agents.sensors.helpers import running

SELF_EXE = os.readlink("/proc/self/exe")
Match = Callable[[Event], bool]


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _program(tmp_path: Path, stem: str) -> Path:
    """A copy of /bin/sleep under a name no other process has."""
    path = tmp_path / f"{stem}-{uuid.uuid4().hex[:10]}"
    shutil.copy("/bin/sleep", path)
    path.chmod(0o755)
    return path


def _proc(action: str, pid: int, exe: str | None = None) -> Match:
    def match(e: Event) -> bool:
        p = e["proc"]
        return bool(p["action"] == action and p["pid"] == pid and (exe is None or p["exe"] == exe))

    return match


# -- procfs ----------------------------------------------------------------------------------
def test_registry_names_the_three_sensors() -> None:
    assert isinstance(create("procfs"), ProcfsSensor)
    assert isinstance(create("inotify", {"paths": ["/tmp"]}), InotifySensor)
    assert isinstance(create("netconn"), NetconnSensor)


def test_procfs_reports_exec_and_exit_of_a_new_process(tmp_path: Path) -> None:
    exe = _program(tmp_path, "sentinel-sleep")
    # GNU sleep adds its arguments: ~1.2 s in all, the second one unique to this run
    tag = f"0.2{random.randrange(10**8):08d}"
    with running(ProcfsSensor()) as run:
        spawned = time.time()
        child = subprocess.Popen([str(exe), "1", tag], cwd=tmp_path)
        try:
            exec_ = run.wait_for(_proc("exec", child.pid, str(exe)), timeout=2.0)
            seen_after = time.time() - spawned
            exit_ = run.wait_for(_proc("exit", child.pid), timeout=10.0)
        finally:
            child.kill()
            child.wait()
        run.assert_contract()

    assert seen_after < 2.0
    p = exec_["proc"]
    assert p["cmdline"] == f"{exe} 1 {tag}"
    assert p["ppid"] == os.getpid()
    assert p["parent_exe"] == SELF_EXE
    assert p["uid"] == os.getuid()
    assert p["user"] == pwd.getpwuid(os.getuid()).pw_name == "root"
    assert p["cwd"] == str(tmp_path)
    # the exec is stamped with the process's start time (clock ticks), not when a scan saw it
    assert abs(_epoch(exec_["ts"]) - spawned) < 0.5
    assert exit_["proc"] == {"action": "exit", "pid": child.pid, "exe": str(exe)}
    assert run.events.index(exec_) < run.events.index(exit_)
    # one exec of the copy and one exit; before it at most the forked child not yet exec'd
    # (a scan that falls between fork and execve sees this interpreter)
    seen = [
        (e["proc"]["action"], e["proc"]["exe"])
        for e in run.matching(lambda e: e["proc"]["pid"] == child.pid)
    ]
    assert seen[-2:] == [("exec", str(exe)), ("exit", str(exe))]
    assert seen[:-2] in ([], [("exec", SELF_EXE)])
    assert run.sensor.counters["scans"] >= 2


def test_procfs_baseline_is_silent_unless_emit_existing(tmp_path: Path) -> None:
    exe = _program(tmp_path, "sentinel-before")
    child = subprocess.Popen([str(exe), "30"])
    try:
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{child.pid}/exe") != str(exe):  # exec done
            assert time.monotonic() < deadline
            time.sleep(0.01)
        quiet = ProcfsSensor()
        quiet.start()
        loud = ProcfsSensor({"emit_existing": True})
        with running(loud) as run:
            event = run.wait_for(_proc("exec", child.pid, str(exe)), timeout=5.0)
        assert event["proc"]["cmdline"] == f"{exe} 30"
        assert not [e for e in quiet.poll_once() if e["proc"]["pid"] == child.pid]
        child.kill()
        child.wait()
        gone = [e for e in quiet.poll_once() if e["proc"]["pid"] == child.pid]
        assert gone and gone[0]["proc"] == {"action": "exit", "pid": child.pid, "exe": str(exe)}
    finally:
        child.kill()
        child.wait()


def test_procfs_reports_an_exec_without_fork(tmp_path: Path) -> None:
    exe = _program(tmp_path, "sentinel-execd")
    # a Python child that waits for our go, then replaces itself (same pid) with the copy
    code = "import os, sys; sys.stdin.readline(); os.execv(sys.argv[1], [sys.argv[1], '1.5'])"
    with running(ProcfsSensor()) as run:
        child = subprocess.Popen(
            [sys.executable, "-c", code, str(exe)], stdin=subprocess.PIPE, cwd=tmp_path
        )
        try:
            first = run.wait_for(_proc("exec", child.pid), timeout=5.0)
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            child.stdin.flush()
            second = run.wait_for(_proc("exec", child.pid, str(exe)), timeout=5.0)
            run.wait_for(_proc("exit", child.pid), timeout=10.0)
        finally:
            child.kill()
            child.wait()
        run.assert_contract()

    assert first["proc"]["exe"] == SELF_EXE
    assert second["proc"]["cmdline"] == f"{exe} 1.5"
    assert second["proc"]["ppid"] == os.getpid()
    assert second["proc"]["cwd"] == str(tmp_path)
    # exec, exec, exit: no exit between the two execs of the same pid
    actions = [
        (e["proc"]["action"], e["proc"]["exe"])
        for e in run.matching(lambda e: e["proc"]["pid"] == child.pid)
    ]
    assert actions == [("exec", SELF_EXE), ("exec", str(exe)), ("exit", str(exe))]
    assert run.sensor.counters["exec_in_place"] >= 1


def _wait_exe(pid: int, exe: Path) -> None:
    deadline = time.monotonic() + 5
    while True:
        try:
            if os.readlink(f"/proc/{pid}/exe") == str(exe):
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"pid {pid} never ran {exe}"
        time.sleep(0.005)


def test_procfs_detects_pid_reuse_within_one_scan(tmp_path: Path) -> None:
    """A process ends and a new one gets its pid between two scans: exit then exec, not nothing.

    Deterministic through /proc/sys/kernel/ns_last_pid (root): the next fork gets the old pid.
    """
    first, second = _program(tmp_path, "sentinel-old"), _program(tmp_path, "sentinel-new")
    sensor = ProcfsSensor()
    sensor.start()
    for _attempt in range(5):
        old = subprocess.Popen([str(first), "30"])
        _wait_exe(old.pid, first)
        seen = [e["proc"] for e in sensor.poll_once() if e["proc"]["pid"] == old.pid]
        assert [(e["action"], e["exe"]) for e in seen] == [("exec", str(first))]
        pid = old.pid
        time.sleep(0.05)  # start times are 10 ms ticks: the new process must start in a later one
        old.kill()
        old.wait()
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        new = subprocess.Popen([str(second), "30"])
        if new.pid == pid:
            break
        new.kill()  # another process took the pid first; try again
        new.wait()
        sensor.poll_once()
    else:
        pytest.fail("could not get the same pid for a new process in 5 attempts")
    try:
        _wait_exe(pid, second)
        events = [e["proc"] for e in sensor.poll_once() if e["proc"]["pid"] == pid]
    finally:
        new.kill()
        new.wait()
    assert [(e["action"], e["exe"]) for e in events] == [
        ("exit", str(first)),
        ("exec", str(second)),
    ]
    assert events[1]["cmdline"] == f"{second} 30"


def test_procfs_skips_kernel_threads_and_stops_quickly() -> None:
    sensor = ProcfsSensor({"emit_existing": True, "interval_s": 0.25})
    with running(sensor) as run:
        run.wait_for(lambda e: e["proc"]["pid"] == 1, timeout=5.0)
        run.assert_contract()
        started = time.monotonic()
    assert time.monotonic() - started < 1.0  # stop() took effect within about a second
    kthreadd = [e for e in run.events if e["proc"]["pid"] == 2]
    assert kthreadd == []  # pid 2 is kthreadd: no exe, not reported
    assert all(e["proc"]["exe"] and not e["proc"]["exe"].startswith("[") for e in run.events)


# -- inotify ---------------------------------------------------------------------------------
def _file(action: str, path: Path, new_path: Path | None = None) -> Match:
    def match(e: Event) -> bool:
        f = e["file"]
        return bool(
            f["action"] == action
            and f["path"] == str(path)
            and (new_path is None or f.get("new_path") == str(new_path))
        )

    return match


def test_inotify_reports_the_life_of_files_in_order(tmp_path: Path) -> None:
    watched = tmp_path / "watched"
    outside = tmp_path / "outside"
    watched.mkdir()
    outside.mkdir()
    data = os.urandom(4096) + b"sentinel"
    a, b = watched / "a.txt", watched / "b.txt"
    sub, c = watched / "sub", watched / "sub" / "c.bin"
    skipped = watched / "ignored.swp"
    incoming, leaving = outside / "in.dat", watched / "leaving.dat"

    sensor = InotifySensor({"paths": [str(watched)], "exclude": ["*.swp"]})
    with running(sensor) as run:
        # one step at a time, each waited for: inotify gives no mode, so a chmod is resolved
        # by a stat when read; the next step must not have renamed the file already
        a.write_bytes(data)
        run.wait_for(_file("modify", a))
        os.chmod(a, 0o600)
        run.wait_for(_file("chmod", a))
        os.chmod(a, 0o600)  # same mode again: no event
        os.utime(a)  # an attribute change that is not a chmod: no event
        skipped.write_bytes(b"x")  # excluded
        os.rename(a, b)
        run.wait_for(_file("rename", a, b))
        os.unlink(b)
        run.wait_for(_file("delete", b))
        sub.mkdir()
        run.wait_for(_file("create", sub))
        c.write_bytes(b"0123456789")
        run.wait_for(_file("modify", c))
        os.unlink(c)
        run.wait_for(_file("delete", c))
        os.rmdir(sub)
        run.wait_for(_file("delete", sub))
        incoming.write_bytes(b"in")
        os.rename(incoming, leaving)  # moved in: a create
        run.wait_for(_file("create", leaving))
        os.rename(leaving, outside / "left.dat")  # moved out: a delete
        run.wait_for(_file("delete", leaving))
        time.sleep(0.5)  # anything stray would arrive by now
        run.assert_contract()

    seq = [
        (
            e["file"]["action"],
            e["file"]["path"],
            *([e["file"]["new_path"]] if "new_path" in e["file"] else []),
        )
        for e in run.events
    ]
    assert seq == [
        ("create", str(a)),
        ("modify", str(a)),
        ("chmod", str(a)),
        ("rename", str(a), str(b)),
        ("delete", str(b)),
        ("create", str(sub)),
        ("create", str(c)),
        ("modify", str(c)),
        ("delete", str(c)),
        ("delete", str(sub)),
        ("create", str(leaving)),
        ("delete", str(leaving)),
    ]
    by = {(e["file"]["action"], e["file"]["path"]): e["file"] for e in run.events}
    modified = by[("modify", str(a))]
    assert modified["size"] == len(data)
    assert modified["sha256"] == hashlib.sha256(data).hexdigest()
    assert by[("chmod", str(a))]["mode"] == "0600"
    assert by[("modify", str(c))]["size"] == 10
    assert by[("modify", str(c))]["sha256"] == hashlib.sha256(b"0123456789").hexdigest()
    assert by[("create", str(sub))]["mode"] == f"{0o777 & ~_umask():04o}"
    assert by[("create", str(leaving))]["size"] == 2
    assert sensor.counters.get("lost", 0) == 0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_inotify_hash_limit_and_a_tree_created_at_once(tmp_path: Path) -> None:
    sensor = InotifySensor({"paths": [str(tmp_path)], "hash_max_bytes": 100})
    big, deep = tmp_path / "big.bin", tmp_path / "deep" / "er" / "est"
    with running(sensor) as run:
        big.write_bytes(b"y" * 101)
        modified = run.wait_for(_file("modify", big))["file"]
        # mkdir -p and a write right away: entries made before a watch exists are found by
        # the scan of each new directory, each reported exactly once
        deep.mkdir(parents=True)
        leaf = deep / "leaf.txt"
        leaf.write_bytes(b"leaf")
        run.wait_for(_file("create", leaf))
        time.sleep(0.5)
        leaf.write_bytes(b"leaf2")  # the new deepest directory is watched now
        again = run.wait_for(lambda e: _file("modify", leaf)(e) and e["file"]["size"] == 5)
        # a directory renamed inside the tree: its watches follow it under the new name
        moved = tmp_path / "moved"
        os.rename(tmp_path / "deep", moved)
        run.wait_for(_file("rename", tmp_path / "deep", moved))
        (moved / "er" / "est" / "leaf.txt").write_bytes(b"leaf333")
        run.wait_for(_file("modify", moved / "er" / "est" / "leaf.txt"))
        run.assert_contract()
    assert modified["size"] == 101 and "sha256" not in modified
    assert again["file"]["sha256"] == hashlib.sha256(b"leaf2").hexdigest()
    creates = [e["file"]["path"] for e in run.events if e["file"]["action"] == "create"]
    expected = [str(tmp_path / "deep"), str(tmp_path / "deep" / "er"), str(deep), str(leaf)]
    assert sorted(creates) == sorted([str(big), *expected])


def test_inotify_watches_a_single_file_across_replacement(tmp_path: Path) -> None:
    target, other = tmp_path / "config.ini", tmp_path / "other.ini"
    target.write_text("a=1\n")
    with running(InotifySensor({"paths": [str(target)]})) as run:
        other.write_text("not watched\n")
        target.write_text("a=22\n")
        run.wait_for(_file("modify", target))
        new = tmp_path / "config.ini.new"
        new.write_text("a=333\n")
        os.replace(new, target)  # how editors save: the watch must survive it
        run.wait_for(_file("create", target))
        target.write_text("a=4444\n")
        last = run.wait_for(lambda e: _file("modify", target)(e) and e["file"]["size"] == 7)
        time.sleep(0.3)
    assert [(e["file"]["action"], e["file"]["path"]) for e in run.events] == [
        ("modify", str(target)),
        ("create", str(target)),
        ("modify", str(target)),
    ]
    assert last["file"]["sha256"] == hashlib.sha256(b"a=4444\n").hexdigest()


def test_inotify_counts_a_queue_overflow_as_lost(tmp_path: Path) -> None:
    limit = Path("/proc/sys/fs/inotify/max_queued_events")  # read by inotify_init1
    saved = limit.read_text()
    sensor = InotifySensor({"paths": [str(tmp_path)]})
    limit.write_text("16")
    try:
        sensor.start()
    finally:
        limit.write_text(saved)
    for i in range(40):  # 80 events (create, close_write) into a queue of 16
        (tmp_path / f"burst-{i}").write_bytes(b"x")
    with running(sensor, start=False) as run:
        deadline = time.monotonic() + 5
        while sensor.counters.get("lost", 0) == 0:
            assert time.monotonic() < deadline, f"no overflow seen; {len(run.events)} events"
            time.sleep(0.02)
        after = tmp_path / "after-overflow"
        after.write_bytes(b"still watching")
        run.wait_for(_file("modify", after))
    assert sensor.counters["lost"] == 1
    assert len(run.matching(lambda e: e["file"]["path"].startswith(str(tmp_path / "burst-")))) <= 16


def test_inotify_check_names_each_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    also = tmp_path / "gone" / "deeper"
    sensor = InotifySensor({"paths": [str(tmp_path), str(missing), str(also)]})
    assert sensor.check() == [f"path {missing} does not exist", f"path {also} does not exist"]
    with pytest.raises(SensorUnavailable, match=f"inotify: path {missing} does not exist"):
        sensor.start()
    assert InotifySensor({}).check() == [
        "option 'paths' is required: the files or directories to watch"
    ]
    assert InotifySensor({"paths": [str(tmp_path)]}).check() == []


# -- netconn ---------------------------------------------------------------------------------
def _net(action: str, **fields: object) -> Match:
    def match(e: Event) -> bool:
        n = e["net"]
        return bool(n["action"] == action and all(n.get(k) == v for k, v in fields.items()))

    return match


def test_netconn_reports_connect_and_accept_on_loopback() -> None:
    old_listener = socket.create_server(("127.0.0.1", 0))
    old_client = socket.create_connection(old_listener.getsockname())
    old_server, _ = old_listener.accept()
    old_port = old_listener.getsockname()[1]
    try:
        with running(NetconnSensor()) as run:
            listener = socket.create_server(("127.0.0.1", 0))
            port = listener.getsockname()[1]
            client = socket.create_connection(("127.0.0.1", port))
            server, _peer = listener.accept()
            cport = client.getsockname()[1]
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.connect(("127.0.0.1", 9))  # connected UDP: no packet needs to flow
            uport = udp.getsockname()[1]
            try:
                connect = run.wait_for(
                    _net("connect", proto="tcp", src_port=cport, dst_port=port), 5.0
                )
                accept = run.wait_for(
                    _net("accept", proto="tcp", src_port=cport, dst_port=port), 5.0
                )
                udp_event = run.wait_for(_net("connect", proto="udp", src_port=uport), 5.0)
                time.sleep(1.2)  # a few more polls while everything stays open: no repeats
            finally:
                for s in (client, server, listener, udp):
                    s.close()
            run.assert_contract()
    finally:
        for s in (old_client, old_server, old_listener):
            s.close()

    assert connect["net"] == {
        "action": "connect",
        "proto": "tcp",
        "src_ip": "127.0.0.1",
        "src_port": cport,
        "dst_ip": "127.0.0.1",
        "dst_port": port,
        "pid": os.getpid(),
        "exe": SELF_EXE,
    }
    assert accept["net"] == {
        "action": "accept",
        "proto": "tcp",
        "src_ip": "127.0.0.1",
        "src_port": cport,
        "dst_ip": "127.0.0.1",
        "dst_port": port,
        "pid": os.getpid(),
        "exe": SELF_EXE,
    }
    assert udp_event["net"]["dst_ip"] == "127.0.0.1" and udp_event["net"]["dst_port"] == 9
    assert udp_event["net"]["pid"] == os.getpid()
    mine = run.matching(lambda e: port in (e["net"]["src_port"], e["net"]["dst_port"]))
    assert len(mine) == 2  # each side once
    # the connection open before start is baseline
    assert not run.matching(lambda e: old_port in (e["net"]["src_port"], e["net"]["dst_port"]))


def test_netconn_ipv6_and_both_sources_agree() -> None:
    listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    port = listener.getsockname()[1]
    try:
        for source in ("diag", "proc"):
            sensor = NetconnSensor({"source": source, "interval_s": 0.2})
            with running(sensor) as run:
                client = socket.create_connection(("::1", port))
                server, _ = listener.accept()
                try:
                    event = run.wait_for(_net("accept", dst_port=port), 5.0)
                    run.wait_for(_net("connect", dst_port=port, dst_ip="::1"), 5.0)
                finally:
                    client.close()
                    server.close()
                run.assert_contract()
            assert event["net"]["src_ip"] == "::1" and event["net"]["pid"] == os.getpid()
    finally:
        listener.close()


def test_netconn_sources_parse_the_same_sockets() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    try:
        mine = {listener.getsockname()[1], client.getsockname()[1]}

        def ours(socks: list[Sock]) -> set[Sock]:
            return {s for s in socks if mine & {s.local_port, s.remote_port}}

        assert ours(read_diag()) == ours(read_proc_net())
        assert len(ours(read_diag())) == 3  # listener, both ends
    finally:
        for s in (client, server, listener):
            s.close()
