"""Benign fleet activity: each host role has weighted activities that emit coherent event sequences.

Nothing here may look like an attack to the detection rules (see `tests/agents/test_scenarios.py`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

from agents.scenarios.fleet import (
    ADMINS,
    BASH,
    BASTION,
    BUILD,
    CI_USER,
    CRON,
    DB,
    DEV,
    MONITOR_IP,
    PEOPLE,
    ROOT,
    RSYSLOGD,
    SH,
    SSHD,
    SYSTEMD,
    WEB,
    Fleet,
    Host,
    Item,
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

T = TypeVar("T")

# Ordinary public services and where they resolve; every label has low entropy.
PUBLIC: dict[str, tuple[str, ...]] = {
    "deb.debian.org": ("151.101.2.132", "151.101.66.132"),
    "security.debian.org": ("151.101.130.132", "151.101.194.132"),
    "pypi.org": ("151.101.0.223", "151.101.64.223"),
    "files.pythonhosted.org": ("151.101.1.63", "151.101.65.63"),
    "github.com": ("140.82.112.3", "140.82.114.4"),
    "api.github.com": ("140.82.112.6", "140.82.113.6"),
    "codeload.github.com": ("140.82.113.9",),
    "registry.npmjs.org": ("104.16.1.35", "104.16.2.35"),
    "time.cloudflare.com": ("162.159.200.1", "162.159.200.123"),
    "sentry.io": ("35.186.247.156",),
    "hooks.slack.com": ("34.226.36.72",),
    "registry-1.docker.io": ("54.196.99.49", "3.219.239.5"),
    "ghcr.io": ("140.82.112.33",),
    "proxy.golang.org": ("142.250.74.81",),
    "www.python.org": ("151.101.128.223",),
}
# Background lookups: (querying executable, name, qtype); sssd asks for LDAP most, so twice.
# github.com has no AAAA record, so that answer is empty.
LOOKUPS = (
    ("/usr/sbin/sssd_be", "ldap.corp.internal", "A"),
    ("/usr/sbin/sssd_be", "ldap.corp.internal", "A"),
    ("/usr/bin/node", "registry.npmjs.org", "A"),
    ("/usr/bin/git", "codeload.github.com", "A"),
    ("/usr/bin/containerd", "registry-1.docker.io", "A"),
    ("/usr/bin/containerd", "ghcr.io", "A"),
    ("/usr/bin/vector", "metrics.corp.internal", "A"),
    ("/usr/lib/apt/apt-helper", "deb.debian.org", "A"),
    ("/usr/bin/python3.11", "sentry.io", "A"),
    ("/usr/bin/git", "github.com", "AAAA"),
    ("/usr/bin/python3.11", "www.python.org", "A"),
    ("/usr/bin/go", "proxy.golang.org", "A"),
)
REPOS = ("sentinel", "billing-api", "infra", "web-frontend")
SOURCES = (
    "src/app/main.py",
    "src/app/models.py",
    "src/app/api/routes.py",
    "tests/test_api.py",
    "README.md",
    "Makefile",
    "pyproject.toml",
    "src/app/settings.py",
)
PACKAGES = ("requests", "pydantic", "fastapi", "httpx", "rich", "pytest", "orjson", "structlog")
DEBS = ("openssl", "libssl3", "curl", "tzdata", "git", "vim", "libc6", "python3.11")
CI_UNITS = ("parser", "lexer", "rules", "store", "net", "main")
SHELL_COMMANDS = (
    ("/usr/bin/ls", "ls -la"),
    ("/usr/bin/ls", "ls"),
    ("/usr/bin/git", "git status"),
    ("/usr/bin/git", "git diff"),
    ("/usr/bin/git", "git log --oneline -n 20"),
    ("/usr/bin/grep", "grep -rn TODO src/"),
    ("/usr/bin/cat", "cat README.md"),
    ("/usr/bin/less", "less CHANGELOG.md"),
    ("/usr/bin/make", "make lint"),
    ("/usr/bin/find", "find . -name '*.py' -newer Makefile"),
    ("/usr/bin/docker", "docker ps"),
    ("/usr/bin/htop", "htop"),
)
ADMIN_COMMANDS = (
    ("/usr/bin/uptime", "uptime"),
    ("/usr/bin/df", "df -h"),
    ("/usr/bin/free", "free -m"),
    ("/usr/bin/journalctl", "journalctl -u ssh --since today"),
    ("/usr/bin/systemctl", "systemctl status --no-pager"),
    ("/usr/bin/ps", "ps aux"),
)
_SUDO_ANYWHERE = (
    ("/usr/bin/apt-get", "apt-get -qq update"),
    ("/usr/bin/journalctl", "journalctl -p err -n 50"),
    ("/usr/sbin/ufw", "ufw status"),
)
# What admins run as root, by the role of the host they are on.
SUDO_COMMANDS: dict[str, tuple[tuple[str, str], ...]] = {
    WEB: (
        ("/usr/bin/systemctl", "systemctl reload nginx"),
        ("/usr/bin/systemctl", "systemctl restart gunicorn"),
        *_SUDO_ANYWHERE,
    ),
    DB: (("/usr/bin/systemctl", "systemctl restart postgresql"), *_SUDO_ANYWHERE),
    BUILD: (("/usr/bin/systemctl", "systemctl restart gitlab-runner"), *_SUDO_ANYWHERE),
    DEV: _SUDO_ANYWHERE,
    BASTION: (("/usr/bin/tail", "tail -n 100 /var/log/auth.log"), *_SUDO_ANYWHERE),
}
SYSTEM_LOGS = ("/var/log/syslog", "/var/log/syslog", "/var/log/kern.log", "/var/log/daemon.log")
AUTH_LOGS = ("/var/log/auth.log", *SYSTEM_LOGS)
FAILURE_GAP_US = 45_000_000
PG_DATA = "/var/lib/postgresql/16/main"
TIMESYNCD = "/lib/systemd/systemd-timesyncd"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
GUNICORN = "/usr/bin/python3.11"
POSTGRES_EXE = "/usr/lib/postgresql/16/bin/postgres"
RUNNER = "/usr/bin/gitlab-runner"


def _pick(r: Callable[[], float], seq: Sequence[T]) -> T:
    return seq[int(r() * len(seq))]


def _access_log(h: Host) -> str:
    return f"/var/log/{h.httpd.rpartition('/')[2]}/access.log"


class Baseline:
    """Per-host activity tables; the generator picks a host, then takes its queued events."""

    def __init__(self, fleet: Fleet, rng: random.Random) -> None:
        self.fleet = fleet
        self.rng = rng
        self._random = rng.random
        self.internal: dict[str, str] = {f"{h.name}.corp.internal": h.ip for h in fleet.hosts}
        self.internal.update(
            {"ldap.corp.internal": "10.0.0.3", "metrics.corp.internal": MONITOR_IP}
        )
        self.bastion = fleet.by_role.get(BASTION, (None,))[0]
        self.now_us = 0  # event time of the activity being built
        self.last_failure_us: dict[str, int] = {}  # host id -> time of its last failed login
        tables: dict[str, list[tuple[int, Callable[[Host], list[Item]]]]] = {
            WEB: [(40, self.serve_request), (10, self.app_query), (5, self.app_lookup)],
            DB: [(30, self.db_accept), (30, self.db_write)],
            DEV: [
                (30, self.shell_command),
                (7, self.vim_edit),
                (4, self.run_tests),
                (5, self.git_sync),
                (2, self.pip_install),
                (4, self.curl_api),
                (4, self.ssh_out),
                (4, self.temp_file),
            ],
            BUILD: [(3, self.ci_job), (2, self.pip_install), (2, self.temp_file)],
            BASTION: [(20, self.bastion_login), (3, self.sudo), (6, self.ssh_out)],
        }
        common = [
            (7, self.lookup),
            (8, self.syslog),
            (4, self.scrape),
            (2, self.cron_job),
            (1, self.apt),
            (2, self.ntp),
        ]
        for role, acts in tables.items():
            if role not in (DEV, BASTION):
                acts.append((3, self.admin_session))
            acts.extend(common)
        # Relative event volume per host of each role. The bastion's share also carries the ssh
        # hop of every admin session elsewhere, so it needs more to keep its own logins going.
        volume = {WEB: 6, DB: 4, DEV: 4, BUILD: 5, BASTION: 8}
        schedule: list[Host] = []
        for h in fleet.hosts:
            h.activities = tuple(a for w, a in tables[h.role] for _ in range(w))
            schedule.extend([h] * volume[h.role])
        # Hosts repeated by activity level: the generator draws from it once per event.
        self.schedule: tuple[Host, ...] = tuple(schedule)

    def refill(self, h: Host, now_us: int) -> None:
        """Queue the events of one more activity of `h` (activities never return nothing)."""
        self.now_us = now_us
        acts = h.activities
        h.pending.extend(acts[int(self._random() * len(acts))](h))

    # --- all roles ---------------------------------------------------------------------------

    def syslog(self, h: Host) -> list[Item]:
        r = self._random
        path = _pick(r, AUTH_LOGS if h.role == BASTION else SYSTEM_LOGS)
        return [
            file_("modify", path, h.daemon(RSYSLOGD), RSYSLOGD, h.grow(path, 80 + int(r() * 300)))
        ]

    def scrape(self, h: Host) -> list[Item]:
        r = self._random
        inbound = accept(h, MONITOR_IP, 9100, h.daemon(NODE_EXPORTER), NODE_EXPORTER)
        return [inbound, flow(inbound, 180 + int(r() * 40), 20_000 + int(r() * 30_000))]

    def lookup(self, h: Host) -> list[Item]:
        exe, name, qtype = _pick(self._random, LOOKUPS)
        pid = h.daemon(exe)
        if qtype == "AAAA":
            return [dns_(name, [], pid, exe, qtype="AAAA")]
        ip = self.internal.get(name) or _pick(self._random, PUBLIC[name])
        return [dns_(name, [ip], pid, exe)]

    def ntp(self, h: Host) -> list[Item]:
        name = "time.cloudflare.com"
        ip = _pick(self._random, PUBLIC[name])
        pid = h.daemon(TIMESYNCD)
        return [dns_(name, [ip], pid, TIMESYNCD), connect(h, ip, 123, pid, TIMESYNCD, proto="udp")]

    def cron_job(self, h: Host) -> list[Item]:
        r = self._random
        sh = h.next_pid()
        if h.role == DB and r() < 0.4:
            cmd = "pg_dump -Fc app > /var/backups/pg/app.dump"
            dump = h.next_pid()
            return [
                exec_(sh, h.cron, SH, f"/bin/sh -c '{cmd}'", h.owner, CRON, h.owner.home),
                exec_(dump, sh, "/usr/bin/pg_dump", "pg_dump -Fc app", h.owner, SH, h.owner.home),
                file_("create", "/var/backups/pg/app.dump", sh, SH, 0),
                file_("modify", "/var/backups/pg/app.dump", sh, SH, 40_000_000 + int(r() * 9e6)),
                exit_(dump, sh, "/usr/bin/pg_dump", h.owner),
                exit_(sh, h.cron, SH, h.owner),
            ]
        period = _pick(r, ("hourly", "hourly", "daily"))
        cmd = f"cd / && run-parts --report /etc/cron.{period}"
        parts = h.next_pid()
        items = [
            exec_(sh, h.cron, SH, f"/bin/sh -c '{cmd}'", ROOT, CRON, "/root"),
            exec_(
                parts,
                sh,
                "/usr/bin/run-parts",
                f"run-parts --report /etc/cron.{period}",
                ROOT,
                SH,
                "/",
            ),
        ]
        if period == "daily":
            lr = h.next_pid()
            log = _access_log(h) if h.httpd else "/var/log/syslog"
            items += [
                exec_(
                    lr,
                    parts,
                    "/usr/sbin/logrotate",
                    "/usr/sbin/logrotate /etc/logrotate.conf",
                    ROOT,
                    "/usr/bin/run-parts",
                    "/",
                ),
                file_("rename", log, lr, "/usr/sbin/logrotate", new_path=f"{log}.1"),
                file_("create", log, lr, "/usr/sbin/logrotate", 0),
                file_("chmod", log, lr, "/usr/sbin/logrotate", mode="0640"),
                exit_(lr, parts, "/usr/sbin/logrotate", ROOT),
            ]
            h.log_sizes[log] = 0
        else:
            sa = h.next_pid()
            items += [
                exec_(
                    sa,
                    parts,
                    "/usr/lib/sysstat/debian-sa1",
                    "debian-sa1 1 1",
                    ROOT,
                    "/usr/bin/run-parts",
                    "/",
                ),
                file_(
                    "modify",
                    "/var/log/sysstat/sa01",
                    sa,
                    "/usr/lib/sysstat/sadc",
                    h.grow("/var/log/sysstat/sa01", 3000),
                ),
                exit_(sa, parts, "/usr/lib/sysstat/debian-sa1", ROOT),
            ]
        items += [exit_(parts, sh, "/usr/bin/run-parts", ROOT), exit_(sh, h.cron, SH, ROOT)]
        return items

    def apt(self, h: Host) -> list[Item]:
        r = self._random
        apt = h.next_pid()
        exe = "/usr/bin/apt-get"
        if r() < 0.6:
            items = [exec_(apt, 1, exe, "apt-get -qq update", ROOT, SYSTEMD, "/")]
            for name in ("deb.debian.org", "security.debian.org"):
                ip = _pick(r, PUBLIC[name])
                conn = connect(h, ip, 80, apt, "/usr/lib/apt/methods/http")
                items += [
                    dns_(name, [ip], apt, exe),
                    conn,
                    flow(conn, 90_000 + int(r() * 1e6), 900),
                ]
                items.append(
                    file_(
                        "modify",
                        f"/var/lib/apt/lists/{name}_dists_bookworm_InRelease",
                        apt,
                        exe,
                        150_000 + int(r() * 5000),
                    )
                )
            items.append(exit_(apt, 1, exe, ROOT))
            return items
        pkg = _pick(r, DEBS)
        dpkg = h.next_pid()
        ip = _pick(r, PUBLIC["deb.debian.org"])
        conn = connect(h, ip, 80, apt, "/usr/lib/apt/methods/http")
        target = f"/usr/share/doc/{pkg}/changelog.Debian.gz"
        return [
            exec_(apt, 1, exe, f"apt-get install -y --only-upgrade {pkg}", ROOT, SYSTEMD, "/"),
            dns_("deb.debian.org", [ip], apt, exe),
            conn,
            flow(conn, 200_000 + int(r() * 2e6), 1200),
            file_("create", f"/var/cache/apt/archives/{pkg}_amd64.deb", apt, exe, 300_000),
            exec_(
                dpkg,
                apt,
                "/usr/bin/dpkg",
                f"/usr/bin/dpkg --unpack /var/cache/apt/archives/{pkg}_amd64.deb",
                ROOT,
                exe,
                "/",
            ),
            file_(
                "create",
                f"{target}.dpkg-new",
                dpkg,
                "/usr/bin/dpkg",
                4000 + int(r() * 9000),
                sha256=sha256(self.rng),
            ),
            file_("rename", f"{target}.dpkg-new", dpkg, "/usr/bin/dpkg", new_path=target),
            file_("modify", "/var/lib/dpkg/status", dpkg, "/usr/bin/dpkg", 1_900_000),
            exit_(dpkg, apt, "/usr/bin/dpkg", ROOT),
            exit_(apt, 1, exe, ROOT),
        ]

    def admin_session(self, h: Host) -> list[Item]:
        """An admin (or, on web servers, the deploy user) hops in from the bastion, looks around."""
        r = self._random
        user = _pick(r, h.users)
        bastion = self.bastion
        src = bastion.ip if bastion is not None else user.laptop_ip
        if bastion is not None and bastion is not h:
            client = bastion.next_pid()
            conn = connect(bastion, h.ip, 22, client, "/usr/bin/ssh")
            bastion.pending.extend(
                [
                    exec_(
                        client,
                        bastion.shell(user),
                        "/usr/bin/ssh",
                        f"ssh {h.name}",
                        user,
                        BASH,
                        user.home,
                    ),
                    dns_(f"{h.name}.corp.internal", [h.ip], client, "/usr/bin/ssh"),
                    conn,
                ]
            )
        session, shell = h.next_pid(), h.next_pid()
        items = [
            accept(h, src, 22, h.sshd, SSHD),
            auth_("login", user.name, src, "publickey"),
            exec_(shell, session, BASH, "-bash", user, SSHD, user.home),
        ]
        for _ in range(1 + int(r() * 3)):
            items += self._command(h, user, shell, ADMIN_COMMANDS, user.home)
        if user.admin and r() < 0.4:
            items += self._sudo(h, user, shell)
        items += [exit_(shell, session, BASH, user), auth_("logout", user.name, src)]
        return items

    def _command(
        self, h: Host, user: User, shell: int, commands: Sequence[tuple[str, str]], cwd: str
    ) -> list[Item]:
        exe, cmd = _pick(self._random, commands)
        pid = h.next_pid()
        return [exec_(pid, shell, exe, cmd, user, BASH, cwd), exit_(pid, shell, exe, user)]

    def _sudo(self, h: Host, user: User, shell: int) -> list[Item]:
        exe, cmd = _pick(self._random, SUDO_COMMANDS[h.role])
        sudo, child = h.next_pid(), h.next_pid()
        return [
            exec_(sudo, shell, "/usr/bin/sudo", f"sudo {cmd}", user, BASH, user.home),
            auth_("sudo", user.name),
            exec_(child, sudo, exe, cmd, ROOT, "/usr/bin/sudo", user.home),
            exit_(child, sudo, exe, ROOT),
            exit_(sudo, shell, "/usr/bin/sudo", user),
        ]

    # --- web servers -------------------------------------------------------------------------

    def serve_request(self, h: Host) -> list[Item]:
        r = self._random
        clients = self.fleet.web_clients
        worker = h.httpd_workers[int(r() * len(h.httpd_workers))]
        inbound = accept(
            h, clients[int(r() * len(clients))], 443 if r() < 0.85 else 80, worker, h.httpd
        )
        log = _access_log(h)
        return [
            inbound,
            flow(inbound, 400 + int(r() * 1500), 300 + int(r() * 60_000)),
            file_("modify", log, worker, h.httpd, h.grow(log, 150 + int(r() * 90))),
        ]

    def app_query(self, h: Host) -> list[Item]:
        r = self._random
        worker = h.app + 1 + int(r() * 4)
        dbs = self.fleet.by_role.get(DB)
        if dbs:
            conn = connect(h, _pick(r, dbs).ip, 5432, worker, GUNICORN)
        else:
            conn = connect(h, "127.0.0.1", 6379, worker, GUNICORN)
        return [conn, flow(conn, 2000 + int(r() * 40_000), 400 + int(r() * 3000))]

    def app_lookup(self, h: Host) -> list[Item]:
        r = self._random
        worker = h.app + 1 + int(r() * 4)
        if r() < 0.5:
            name, ip = _pick(r, tuple(self.internal.items()))
            return [dns_(name, [ip], worker, GUNICORN)]
        name = _pick(r, ("sentry.io", "hooks.slack.com", "api.github.com"))
        ip = _pick(r, PUBLIC[name])
        conn = connect(h, ip, 443, worker, GUNICORN)
        return [dns_(name, [ip], worker, GUNICORN), conn, flow(conn, 900, 2500 + int(r() * 4000))]

    # --- database servers --------------------------------------------------------------------

    def db_accept(self, h: Host) -> list[Item]:
        r = self._random
        webs = self.fleet.by_role.get(WEB) or self.fleet.hosts
        backend = h.next_pid()
        inbound = accept(h, _pick(r, webs).ip, 5432, backend, POSTGRES_EXE)
        return [inbound, flow(inbound, 400 + int(r() * 3000), 2000 + int(r() * 40_000))]

    def db_write(self, h: Host) -> list[Item]:
        r = self._random
        if r() < 0.5:
            path = f"{PG_DATA}/pg_wal/00000001000000A2000000{int(r() * 256):02X}"
        else:
            path = f"{PG_DATA}/base/16384/{16400 + int(r() * 60)}"
        return [file_("modify", path, h.app, POSTGRES_EXE, 8192 * (1 + int(r() * 2000)))]

    # --- developer workstations --------------------------------------------------------------

    def _dev(self, h: Host) -> tuple[User, int, str]:
        user = h.owner
        return user, h.shell(user), f"{user.home}/src/{_pick(self._random, REPOS)}"

    def shell_command(self, h: Host) -> list[Item]:
        user, shell, cwd = self._dev(h)
        return self._command(h, user, shell, SHELL_COMMANDS, cwd)

    def vim_edit(self, h: Host) -> list[Item]:
        r = self._random
        user, shell, cwd = self._dev(h)
        src = _pick(r, SOURCES)
        path = f"{cwd}/{src}"
        head, _, tail = path.rpartition("/")
        swp = f"{head}/.{tail}.swp"
        vim = h.next_pid()
        size = 800 + int(r() * 20_000)
        return [
            exec_(vim, shell, "/usr/bin/vim.basic", f"vim {src}", user, BASH, cwd),
            file_("create", swp, vim, "/usr/bin/vim.basic", 4096),
            file_("modify", path, vim, "/usr/bin/vim.basic", size),
            file_("modify", path, vim, "/usr/bin/vim.basic", size + int(r() * 400)),
            file_("delete", swp, vim, "/usr/bin/vim.basic"),
            exit_(vim, shell, "/usr/bin/vim.basic", user),
        ]

    def run_tests(self, h: Host) -> list[Item]:
        r = self._random
        user, shell, cwd = self._dev(h)
        py = h.next_pid()
        exe = "/usr/bin/python3.11"
        items = [exec_(py, shell, exe, "python3 -m pytest -q", user, BASH, cwd)]
        for src in SOURCES[:4]:
            head, _, tail = src.rpartition("/")
            pyc = f"{cwd}/{head}/__pycache__/{tail[:-3]}.cpython-311.pyc"
            items.append(file_("create", pyc, py, exe, 2000 + int(r() * 30_000)))
        tmp = f"/tmp/pytest-of-{user.name}/pytest-{int(r() * 300)}"
        items += [
            file_("create", f"{tmp}/test_api0/db.sqlite3", py, exe, 24_576),
            file_("delete", f"{tmp}/test_api0/db.sqlite3", py, exe),
            exit_(py, shell, exe, user),
        ]
        return items

    def git_sync(self, h: Host) -> list[Item]:
        r = self._random
        user, shell, cwd = self._dev(h)
        verb = _pick(r, ("fetch", "pull", "push"))
        git, ssh = h.next_pid(), h.next_pid()
        repo = cwd.rpartition("/")[2]
        ip = _pick(r, PUBLIC["github.com"])
        conn = connect(h, ip, 22, ssh, "/usr/bin/ssh")
        pack = "git-receive-pack" if verb == "push" else "git-upload-pack"
        return [
            exec_(git, shell, "/usr/bin/git", f"git {verb}", user, BASH, cwd),
            exec_(
                ssh,
                git,
                "/usr/bin/ssh",
                f"ssh git@github.com {pack} 'sentinel-lab/{repo}.git'",
                user,
                "/usr/bin/git",
                cwd,
            ),
            dns_("github.com", [ip], ssh, "/usr/bin/ssh"),
            conn,
            flow(conn, 3000 + int(r() * 400_000), 2000 + int(r() * 20_000)),
            exit_(ssh, git, "/usr/bin/ssh", user),
            file_("modify", f"{cwd}/.git/FETCH_HEAD", git, "/usr/bin/git", 100 + int(r() * 300)),
            exit_(git, shell, "/usr/bin/git", user),
        ]

    def pip_install(self, h: Host) -> list[Item]:
        r = self._random
        if h.role == BUILD:
            user, shell, cwd = CI_USER, h.app, f"/builds/sentinel-lab/{_pick(r, REPOS)}"
            parent = "/usr/bin/gitlab-runner"
        else:
            (user, shell, cwd), parent = self._dev(h), BASH
        pkg = _pick(r, PACKAGES)
        pip = h.next_pid()
        exe = "/usr/bin/python3.11"
        site = f"{cwd}/.venv/lib/python3.11/site-packages/{pkg}"
        items = [exec_(pip, shell, exe, f"python3 -m pip install -q {pkg}", user, parent, cwd)]
        for name in ("pypi.org", "files.pythonhosted.org"):
            ip = _pick(r, PUBLIC[name])
            conn = connect(h, ip, 443, pip, exe)
            items += [
                dns_(name, [ip], pip, exe),
                conn,
                flow(conn, 20_000 + int(r() * 900_000), 3000),
            ]
        for mod in ("__init__.py", "_version.py", "core.py"):
            items.append(file_("create", f"{site}/{mod}", pip, exe, 300 + int(r() * 30_000)))
        items.append(exit_(pip, shell, exe, user))
        return items

    def curl_api(self, h: Host) -> list[Item]:
        r = self._random
        user, shell, cwd = self._dev(h)
        curl = h.next_pid()
        repo = cwd.rpartition("/")[2]
        ip = _pick(r, PUBLIC["api.github.com"])
        conn = connect(h, ip, 443, curl, "/usr/bin/curl")
        cmd = f"curl -sS -o pulls.json https://api.github.com/repos/sentinel-lab/{repo}/pulls"
        return [
            exec_(curl, shell, "/usr/bin/curl", cmd, user, BASH, cwd),
            dns_("api.github.com", [ip], curl, "/usr/bin/curl"),
            conn,
            flow(conn, 5000 + int(r() * 80_000), 900),
            file_("create", f"{cwd}/pulls.json", curl, "/usr/bin/curl", 5000 + int(r() * 80_000)),
            exit_(curl, shell, "/usr/bin/curl", user),
        ]

    def ssh_out(self, h: Host) -> list[Item]:
        r = self._random
        if h.role == BASTION:
            user = _pick(r, PEOPLE)
            cwd = user.home
            target = _pick(r, self.fleet.hosts)
        else:
            user, _, cwd = self._dev(h)
            target = self.bastion or _pick(r, self.fleet.hosts)
        shell = h.shell(user)
        ssh = h.next_pid()
        conn = connect(h, target.ip, 22, ssh, "/usr/bin/ssh")
        return [
            exec_(ssh, shell, "/usr/bin/ssh", f"ssh {target.name}", user, BASH, cwd),
            dns_(f"{target.name}.corp.internal", [target.ip], ssh, "/usr/bin/ssh"),
            conn,
            flow(conn, 4000 + int(r() * 90_000), 2000 + int(r() * 9000)),
            exit_(ssh, shell, "/usr/bin/ssh", user),
        ]

    def temp_file(self, h: Host) -> list[Item]:
        path = f"/tmp/tmp{self.rng.getrandbits(32):08x}.json"
        if h.role == BUILD:
            return self._scratch(path, h.app, RUNNER)
        user, shell, cwd = self._dev(h)
        py, exe = h.next_pid(), "/usr/bin/python3.11"
        return [
            exec_(py, shell, exe, "python3 scripts/export_report.py", user, BASH, cwd),
            *self._scratch(path, py, exe),
            exit_(py, shell, exe, user),
        ]

    def _scratch(self, path: str, pid: int, exe: str) -> list[Item]:
        size = 200 + int(self._random() * 8000)
        return [
            file_("create", path, pid, exe, 0),
            file_("modify", path, pid, exe, size),
            file_("delete", path, pid, exe),
        ]

    # --- build servers -----------------------------------------------------------------------

    def ci_job(self, h: Host) -> list[Item]:
        r = self._random
        user = CI_USER
        repo = _pick(r, REPOS)
        cwd = f"/builds/sentinel-lab/{repo}"
        shell, git, make = h.next_pid(), h.next_pid(), h.next_pid()
        ip = _pick(r, PUBLIC["github.com"])
        conn = connect(h, ip, 443, git, "/usr/lib/git-core/git-remote-https")
        items = [
            exec_(shell, h.app, BASH, "bash --login", user, RUNNER, cwd),
            exec_(git, shell, "/usr/bin/git", "git fetch --depth 50 origin", user, BASH, cwd),
            dns_("github.com", [ip], git, "/usr/bin/git"),
            conn,
            flow(conn, 50_000 + int(r() * 3e6), 4000),
            file_("modify", f"{cwd}/.git/FETCH_HEAD", git, "/usr/bin/git", 180),
            exit_(git, shell, "/usr/bin/git", user),
            exec_(make, shell, "/usr/bin/make", "make -j8 build", user, BASH, cwd),
        ]
        for unit in CI_UNITS[: 2 + int(r() * 4)]:
            cc = h.next_pid()
            tmp = f"/tmp/cc{self.rng.getrandbits(24):06x}.s"
            items += [
                exec_(
                    cc,
                    make,
                    "/usr/bin/gcc-12",
                    f"cc -O2 -c src/{unit}.c -o build/{unit}.o",
                    user,
                    "/usr/bin/make",
                    cwd,
                ),
                file_("create", tmp, cc, "/usr/bin/gcc-12", 20_000 + int(r() * 90_000)),
                file_(
                    "create",
                    f"{cwd}/build/{unit}.o",
                    cc,
                    "/usr/bin/gcc-12",
                    8000 + int(r() * 90_000),
                ),
                file_("delete", tmp, cc, "/usr/bin/gcc-12"),
                exit_(cc, make, "/usr/bin/gcc-12", user),
            ]
        ld = h.next_pid()
        items += [
            exec_(
                ld,
                make,
                "/usr/bin/ld",
                "ld -o build/sentinel-agent build/*.o",
                user,
                "/usr/bin/make",
                cwd,
            ),
            file_(
                "create",
                f"{cwd}/build/sentinel-agent",
                ld,
                "/usr/bin/ld",
                900_000 + int(r() * 90_000),
                sha256=sha256(self.rng),
            ),
            file_("chmod", f"{cwd}/build/sentinel-agent", ld, "/usr/bin/ld", mode="0755"),
            exit_(ld, make, "/usr/bin/ld", user),
            exit_(make, shell, "/usr/bin/make", user),
            exit_(shell, h.app, BASH, user),
        ]
        return items

    # --- bastion -----------------------------------------------------------------------------

    def bastion_login(self, h: Host) -> list[Item]:
        r = self._random
        user = _pick(r, PEOPLE)
        # From the office laptop, or over the VPN with an address from its pool.
        src = user.laptop_ip if r() < 0.6 else f"10.8.{int(r() * 4)}.{2 + int(r() * 250)}"
        items: list[Item] = [accept(h, src, 22, h.sshd, SSHD)]
        method = "publickey"
        # A mistyped password now and then, followed by the right one; rare on any one host at
        # any event rate, since a few failures in a minute or two is what brute-force rules flag.
        quiet = self.now_us - self.last_failure_us.get(h.id, -FAILURE_GAP_US) >= FAILURE_GAP_US
        if quiet and r() < 0.025:
            self.last_failure_us[h.id] = self.now_us
            method = "password"
            items.append(auth_("failure", user.name, src, method))
        session = h.next_pid()
        shell = h.shells[user.name] = h.next_pid()
        items += [
            auth_("login", user.name, src, method),
            exec_(shell, session, BASH, "-bash", user, SSHD, user.home),
        ]
        for _ in range(int(r() * 3)):
            items += self._command(h, user, shell, ADMIN_COMMANDS, user.home)
        if r() < 0.5:
            items += [exit_(shell, session, BASH, user), auth_("logout", user.name, src)]
        return items

    def sudo(self, h: Host) -> list[Item]:
        user = _pick(self._random, ADMINS)
        return self._sudo(h, user, h.shell(user))
