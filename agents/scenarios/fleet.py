"""The simulated fleet (hosts, roles, users, resident processes) and the builders of event objects.

Baseline traffic and attack episodes both draw pids, ports and addresses from here.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
Item = tuple[str, Obj]  # (kind, kind object), before the envelope is added

WEB, DB, DEV, BUILD, BASTION = "web", "db", "dev", "build", "bastion"
# The first hosts cover every role so even a small fleet has a web server, a database, a
# workstation, a build server and the (single) bastion; larger fleets repeat the cycle.
_FIRST_ROLES = (WEB, DB, DEV, BUILD, BASTION)
_ROLE_CYCLE = (WEB, DEV, WEB, DEV, DB, BUILD, WEB, DEV)
_ROLE_OCTET = {BASTION: 0, WEB: 1, DB: 2, DEV: 3, BUILD: 4}

RESOLVER_IP = "10.0.0.2"
MONITOR_IP = "10.0.0.5"
PID_MAX = 4_194_304
# Ports that detection rules treat as mining pools; never used as an ephemeral port.
MINING_PORTS = frozenset({3333, 4444, 5555, 7777, 14444, 45700})

SH, BASH = "/bin/sh", "/bin/bash"
SSHD, CRON = "/usr/sbin/sshd", "/usr/sbin/cron"
RSYSLOGD, SYSTEMD = "/usr/sbin/rsyslogd", "/lib/systemd/systemd"


@dataclass(frozen=True, slots=True)
class User:
    name: str
    uid: int
    home: str
    laptop_ip: str
    admin: bool = False


# People: developers log in from their laptops on the office network (10.20.0.0/16);
# only `ops` and `erin` are admins, and only admins ever use sudo in baseline traffic.
PEOPLE: tuple[User, ...] = (
    User("alice", 1000, "/home/alice", "10.20.1.21"),
    User("bob", 1001, "/home/bob", "10.20.1.34"),
    User("carol", 1002, "/home/carol", "10.20.2.17"),
    User("dave", 1003, "/home/dave", "10.20.2.58"),
    User("erin", 1004, "/home/erin", "10.20.3.12", admin=True),
    User("frank", 1005, "/home/frank", "10.20.3.40"),
    User("ops", 1100, "/home/ops", "10.20.9.5", admin=True),
)
ADMINS: tuple[User, ...] = tuple(u for u in PEOPLE if u.admin)
DEVELOPERS: tuple[User, ...] = tuple(u for u in PEOPLE if not u.admin)
DEPLOY = User("deploy", 1050, "/home/deploy", "10.0.4.10")  # deploys are pushed from CI
ROOT = User("root", 0, "/root", "")
WWW = User("www-data", 33, "/var/www", "")
POSTGRES = User("postgres", 113, "/var/lib/postgresql", "")
CI_USER = User("gitlab-runner", 998, "/home/gitlab-runner", "")


@dataclass(slots=True)
class Host:
    id: str
    name: str
    role: str
    ip: str
    ref: dict[str, str]
    rng: random.Random
    owner: User  # the person or service account whose files live on this host
    users: tuple[User, ...]  # who logs in interactively
    pid: int = 1000
    sshd: int = 0
    cron: int = 0
    httpd: str = ""  # web servers: /usr/sbin/nginx or /usr/sbin/apache2
    httpd_workers: tuple[int, ...] = ()
    app: int = 0  # web: gunicorn; db: postgres; build: gitlab-runner
    shells: dict[str, int] = field(default_factory=dict)  # user -> login shell pid
    daemons: dict[str, int] = field(default_factory=dict)  # executable -> pid
    log_sizes: dict[str, int] = field(default_factory=dict)
    pending: deque[Item] = field(default_factory=deque)
    activities: tuple[Callable[[Host], list[Item]], ...] = ()

    def next_pid(self) -> int:
        # Linux hands out pids sequentially; other processes take some in between.
        self.pid += 1 + int(self.rng.random() * 6)
        if self.pid >= PID_MAX:
            self.pid = 300
        return self.pid

    def port(self) -> int:
        """An ephemeral source port from the Linux default range."""
        p = 32768 + int(self.rng.random() * 28232)
        return p + 1 if p in MINING_PORTS else p

    def grow(self, path: str, by: int) -> int:
        """Append `by` bytes to a tracked log file and return its new size."""
        size = self.log_sizes.get(path, 40_000) + by
        self.log_sizes[path] = size
        return size

    def daemon(self, exe: str) -> int:
        """The pid of the long-running `exe` on this host, started on first use."""
        pid = self.daemons.get(exe)
        if pid is None:
            pid = self.daemons[exe] = self.next_pid()
        return pid

    def shell(self, user: User) -> int:
        """The pid of `user`'s interactive shell on this host, started on first use."""
        pid = self.shells.get(user.name)
        if pid is None:
            pid = self.shells[user.name] = self.next_pid()
        return pid


@dataclass(slots=True)
class Fleet:
    hosts: tuple[Host, ...]
    by_role: dict[str, tuple[Host, ...]]
    web_clients: tuple[str, ...]  # public client addresses hitting the web servers

    def pick(self, rng: random.Random, *roles: str) -> Host:
        """A host of the first role present in `roles`, or any host when none is."""
        for role in roles:
            found = self.by_role.get(role)
            if found:
                return found[int(rng.random() * len(found))]
        return self.hosts[int(rng.random() * len(self.hosts))]


def _public_ip(rng: random.Random) -> str:
    # Clients come from ordinary public space: not private, loopback, multicast, CGNAT or the
    # documentation ranges (203.0.113.0/24, 198.51.100.0/24, 192.0.2.0/24 are reserved for bad).
    while True:
        a = 1 + int(rng.random() * 222)
        b, c, d = (int(rng.random() * 256) for _ in range(3))
        if a in (10, 100, 127, 169, 172, 192, 198, 203):
            continue
        return f"{a}.{b}.{c}.{max(d, 1)}"


def build_fleet(count: int, rng: random.Random) -> Fleet:
    """`count` hosts with roles, addresses, users and resident processes, all drawn from `rng`."""
    hosts: list[Host] = []
    ordinals: dict[str, int] = {}
    for i in range(count):
        role = _FIRST_ROLES[i] if i < len(_FIRST_ROLES) else _ROLE_CYCLE[i % len(_ROLE_CYCLE)]
        n = ordinals[role] = ordinals.get(role, 0) + 1
        name = f"{role}-{n}"
        octet = _ROLE_OCTET[role]
        # Past 240 hosts of a role, spill into 10.<octet + 1>.x.y so addresses stay unique.
        ip = f"10.0.{octet}.{10 + n}" if n < 240 else f"10.{octet + 1}.{n // 240}.{10 + n % 240}"
        if role == DEV:
            owner = DEVELOPERS[(n - 1) % len(DEVELOPERS)]
            users: tuple[User, ...] = (owner,)
        elif role == BASTION:
            owner, users = ADMINS[-1], PEOPLE
        elif role == WEB:
            owner, users = DEPLOY, (DEPLOY, *ADMINS)
        elif role == DB:
            owner, users = POSTGRES, ADMINS
        else:
            owner, users = CI_USER, ADMINS
        h = Host(
            id=f"h-{i:03d}",
            name=name,
            role=role,
            ip=ip,
            ref={"id": f"h-{i:03d}", "name": name, "os": "linux"},
            rng=rng,
            owner=owner,
            users=users,
            pid=400 + int(rng.random() * 600),
        )
        h.cron, h.sshd = h.next_pid(), h.next_pid()
        if role == WEB:
            # Every third web server runs Apache; the rest nginx.
            h.httpd = "/usr/sbin/apache2" if n % 3 == 0 else "/usr/sbin/nginx"
            # gunicorn master and its four workers, then the web server master and its workers.
            h.app = h.next_pid()
            h.pid = h.app + 4
            master = h.next_pid()
            h.httpd_workers = tuple(master + k for k in range(1, 5))
            h.pid = master + 4
        elif role in (DB, BUILD):
            h.app = h.next_pid()
        # Boot-time jitter so hosts do not share pid ranges.
        h.pid += int(rng.random() * 20_000)
        hosts.append(h)
    by_role: dict[str, tuple[Host, ...]] = {}
    for h in hosts:
        by_role[h.role] = (*by_role.get(h.role, ()), h)
    clients = tuple(_public_ip(rng) for _ in range(400))
    return Fleet(hosts=tuple(hosts), by_role=by_role, web_clients=clients)


# Builders of kind objects. Fields that do not apply are left out rather than set to None.


def exec_(pid: int, ppid: int, exe: str, cmdline: str, user: User, parent: str, cwd: str) -> Item:
    return (
        "proc",
        {
            "action": "exec",
            "pid": pid,
            "ppid": ppid,
            "exe": exe,
            "cmdline": cmdline,
            "user": user.name,
            "uid": user.uid,
            "parent_exe": parent,
            "cwd": cwd,
        },
    )


def exit_(pid: int, ppid: int, exe: str, user: User) -> Item:
    return (
        "proc",
        {
            "action": "exit",
            "pid": pid,
            "ppid": ppid,
            "exe": exe,
            "user": user.name,
            "uid": user.uid,
        },
    )


def file_(
    action: str, path: str, pid: int, exe: str, size: int | None = None, **extra: Any
) -> Item:
    obj: Obj = {"action": action, "path": path, "pid": pid, "exe": exe}
    if size is not None:
        obj["size"] = size
    if extra:
        obj.update(extra)
    return ("file", obj)


def accept(h: Host, src_ip: str, dst_port: int, pid: int, exe: str) -> Item:
    """An inbound TCP connection from `src_ip` to `h` on `dst_port`."""
    return (
        "net",
        {
            "action": "accept",
            "proto": "tcp",
            "src_ip": src_ip,
            "src_port": h.port(),
            "dst_ip": h.ip,
            "dst_port": dst_port,
            "pid": pid,
            "exe": exe,
        },
    )


def connect(h: Host, dst_ip: str, dst_port: int, pid: int, exe: str, proto: str = "tcp") -> Item:
    return (
        "net",
        {
            "action": "connect",
            "proto": proto,
            "src_ip": h.ip,
            "src_port": h.port(),
            "dst_ip": dst_ip,
            "dst_port": dst_port,
            "pid": pid,
            "exe": exe,
        },
    )


def flow(conn: Item, bytes_in: int, bytes_out: int) -> Item:
    """The flow summary of an earlier connect/accept: same 5-tuple, with byte and packet counts."""
    c = conn[1]
    packets = 2 + (bytes_in + bytes_out) // 1200
    return (
        "net",
        {
            "action": "flow",
            "proto": c["proto"],
            "src_ip": c["src_ip"],
            "src_port": c["src_port"],
            "dst_ip": c["dst_ip"],
            "dst_port": c["dst_port"],
            "pid": c["pid"],
            "exe": c["exe"],
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "packets": packets,
        },
    )


def dns_(
    query: str, answers: list[str], pid: int, exe: str, qtype: str = "A", rcode: str = "NOERROR"
) -> Item:
    return (
        "dns",
        {
            "query": query,
            "qtype": qtype,
            "rcode": rcode,
            "answers": answers,
            "pid": pid,
            "exe": exe,
            "server": RESOLVER_IP,
        },
    )


def auth_(action: str, user: str, src_ip: str = "", method: str = "") -> Item:
    obj: Obj = {"action": action, "user": user}
    if src_ip:
        obj["src_ip"] = src_ip
    if method:
        obj["method"] = method
    return ("auth", obj)


def sha256(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"
