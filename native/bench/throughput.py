"""Rough single-core throughput of `RuleEngine.evaluate_jsonl` on mixed security events.

Run after installing the wheel: `.venv/bin/python native/bench/throughput.py [events]`.
Prints events/s and rule evaluations/s; the rules are typical of a detection pack.
"""

from __future__ import annotations

import json
import random
import sys
import time

import sentinel_rhai

RULES: dict[str, tuple[list[str] | None, str]] = {
    "curl_pipe_shell": (
        ["proc"],
        'if glob(event.proc.cmdline, "*curl*|*sh*") { emit(#{title: "curl piped to a shell"}); }',
    ),
    "tmp_exec": (
        ["proc"],
        'if event.proc.action == "exec" && glob(event.proc.exe, "/tmp/*") { emit(); }',
    ),
    "shell_from_web": (
        ["proc"],
        'if in_list(event.proc.user, "web_users") && re_match(event.proc.exe, "/(ba|da|z)?sh$") { emit(); }',
    ),
    "encoded_powershell": (
        ["proc"],
        'if re_match(event.proc.cmdline, "(?i)-enc(odedcommand)? [A-Za-z0-9+/=]{20,}") { emit(); }',
    ),
    "root_uid_from_unusual_parent": (
        ["proc"],
        'if event.proc.uid == 0 && !in_list(event.proc.parent_exe, "admin_parents") && event.proc.action == "exec" { let x = 1; }',
    ),
    "proc_burst": (
        ["proc"],
        "window_push(event.host.id); if window_count(event.host.id, 10) > 500 { emit(#{dedup: event.host.id}); }",
    ),
    "shadow_read": (
        ["file"],
        'if event.file.path == "/etc/shadow" && event.file.exe != "/usr/sbin/unix_chkpwd" { emit(#{severity: "high"}); }',
    ),
    "ssh_key_write": (
        ["file"],
        'if glob(event.file.path, "*/.ssh/authorized_keys") && event.file.action != "delete" { emit(); }',
    ),
    "chmod_exec_tmp": (
        ["file"],
        'if event.file.action == "chmod" && glob(event.file.path, "/tmp/*") && (event.file.mode & 0o111) != 0 { emit(); }',
    ),
    "external_smb": (
        ["net"],
        'if event.net.dst_port == 445 && !cidr(event.net.dst_ip, "10.0.0.0/8") && !cidr(event.net.dst_ip, "192.168.0.0/16") { emit(); }',
    ),
    "big_upload": (
        ["net"],
        'if event.net.bytes_out > 50000000 && !cidr(event.net.dst_ip, "10.0.0.0/8") { emit(#{context: #{bytes: event.net.bytes_out}}); }',
    ),
    "port_scan": (
        ["net"],
        'if event.net.action == "connect" { let n = window_distinct(event.net.src_ip, event.net.dst_port, 60); if n == 100 { emit(#{dedup: event.net.src_ip}); } }',
    ),
    "dga_domain": (
        ["dns"],
        'let q = event.dns.query; let label = q.split(".")[0]; if label.len() > 12 && entropy(label) > 3.8 { emit(#{context: #{query: q}}); }',
    ),
    "dns_tunnel": (
        ["dns"],
        'if event.dns.qtype == "TXT" && event.dns.query.len() > 60 { emit(); }',
    ),
    "ssh_bruteforce": (
        ["auth"],
        'if event.auth.action == "failure" { window_push(event.auth.src_ip); if window_count(event.auth.src_ip, 60) == 20 { emit(#{dedup: event.auth.src_ip}); } }',
    ),
    "sudo_by_service": (
        ["auth"],
        'if event.auth.action == "sudo" && in_list(event.auth.user, "service_accounts") { emit(); }',
    ),
    "any_kind_labels": (None, 'if event.labels?.attack == "none_such" { emit(); }'),
}


def make_events(count: int, seed: int = 7) -> bytes:
    rnd = random.Random(seed)
    lines = []
    base = 1_796_284_800
    for i in range(count):
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + i // 100)) + f".{i % 1000:03d}Z"
        host = {"id": f"h-{rnd.randrange(50):03d}", "name": "web-1", "os": "linux"}
        kind = rnd.choice(["proc", "proc", "file", "net", "net", "dns", "auth"])
        rare = rnd.random() < 0.01  # about 1% of events look suspicious
        event = {
            "schema": "sentinel.event/1",
            "id": f"ev-{i}",
            "ts": ts,
            "host": host,
            "sensor": {"name": "bench", "version": "0.1.0"},
            "kind": kind,
        }
        if kind == "proc":
            exe = (
                "/tmp/x"
                if rare
                else rnd.choice(
                    ["/usr/bin/curl", "/bin/bash", "/usr/bin/python3", "/usr/sbin/sshd"]
                )
            )
            event["proc"] = {
                "action": rnd.choice(["exec", "exit"]),
                "pid": rnd.randrange(1, 60000),
                "ppid": 1,
                "exe": exe,
                "cmdline": f"{exe} -s http://203.0.113.7/x.sh" if rare else f"{exe} --version",
                "user": rnd.choice(["www-data", "root", "alice"]),
                "uid": rnd.choice([0, 33, 1000]),
                "parent_exe": "/bin/bash",
                "cwd": "/tmp",
            }
        elif kind == "file":
            event["file"] = {
                "action": rnd.choice(["create", "modify", "chmod", "delete"]),
                "path": rnd.choice(["/etc/shadow", "/tmp/a.sh", "/home/a/.ssh/authorized_keys"])
                if rare
                else rnd.choice(["/var/log/syslog", "/home/a/notes.txt", "/var/lib/app/db"]),
                "pid": 10,
                "exe": "/bin/cat",
                "size": 100,
                "mode": 0o755,
                "sha256": "0" * 64,
            }
        elif kind == "net":
            event["net"] = {
                "action": "connect",
                "proto": "tcp",
                "src_ip": f"10.0.0.{rnd.randrange(255)}",
                "src_port": 40000,
                "dst_ip": "203.0.113.7"
                if rare
                else rnd.choice(["10.1.2.3", "10.9.8.7", "192.168.1.20"]),
                "dst_port": 445 if rare else rnd.choice([80, 443, 22]),
                "pid": 1,
                "exe": "/usr/bin/curl",
                "bytes_in": 1000,
                "bytes_out": rnd.randrange(100, 100_000_000 if rare else 50_000),
                "packets": 10,
            }
        elif kind == "dns":
            label = "".join(
                rnd.choice("abcdefghijklmnopqrstuvwxyz0123456789")
                for _ in range(16 if rare else rnd.randrange(4, 9))
            )
            event["dns"] = {
                "query": f"{label}.example.com",
                "qtype": "TXT" if rare else rnd.choice(["A", "AAAA"]),
                "rcode": "NOERROR",
                "answers": ["203.0.113.7"],
                "pid": 1,
                "exe": "/usr/bin/dig",
                "server": "10.0.0.53",
            }
        else:
            event["auth"] = {
                "action": rnd.choice(["login", "failure", "sudo"]),
                "user": "svc-backup" if rare else "alice",
                "src_ip": f"198.51.100.{rnd.randrange(20)}",
                "method": "password",
            }
        lines.append(json.dumps(event))
    return ("\n".join(lines) + "\n").encode()


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    engine = sentinel_rhai.RuleEngine()
    engine.replace_all(
        [{"id": rid, "source": src, "kinds": kinds} for rid, (kinds, src) in RULES.items()]
    )
    engine.set_list("web_users", ["www-data", "nginx"])
    engine.set_list("admin_parents", ["/usr/bin/sudo", "/usr/sbin/sshd"])
    engine.set_list("service_accounts", ["svc-backup"])
    data = make_events(count)
    engine.evaluate_jsonl(data[: len(data) // 10])  # warm caches
    before = sum(s["evals"] for s in engine.stats().values())
    started, cpu_started = time.perf_counter(), time.process_time()
    result = engine.evaluate_jsonl(data)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    evals = sum(s["evals"] for s in engine.stats().values()) - before
    print(
        f"{len(RULES)} rules, {result.events} events, {evals} rule evaluations, "
        f"{len(result.matches)} matches, {len(result.failures)} failures"
    )
    # CPU time is the steadier figure on a shared machine; wall time includes waiting for a core.
    for label, seconds in (("wall", elapsed), ("cpu", cpu)):
        print(
            f"{label:>4}: {seconds:.3f} s, {result.events / seconds:,.0f} events/s, "
            f"{evals / seconds:,.0f} rule evaluations/s"
        )
    for failure in result.failures[:5]:
        print("  ", failure)


if __name__ == "__main__":
    main()
