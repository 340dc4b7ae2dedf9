"""The embedded Apache Kafka broker: jars from Maven Central, KRaft storage, one local process.

`sentinel kafka up|down|status|logs` is the user-facing side. When the settings point at a cluster
this project does not manage (`Settings.kafka_embedded` is false), nothing here starts anything.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from sentinel.settings import Settings

MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"

Say = Callable[[str], None]


class BrokerError(RuntimeError):
    """The embedded broker could not be fetched, formatted, started or stopped; the text says why."""


@dataclass(frozen=True)
class BrokerStatus:
    state: Literal["running", "stopped", "external", "unresponsive"]
    bootstrap: str
    pid: int | None = None
    log_file: Path | None = None

    def describe(self) -> str:
        if self.state == "external":
            return f"external cluster at {self.bootstrap} (not managed here)"
        if self.state == "running":
            return f"running (pid {self.pid}) at {self.bootstrap}; logs: {self.log_file}"
        if self.state == "unresponsive":
            return (
                f"process {self.pid} is alive but {self.bootstrap} does not answer metadata; "
                f"see {self.log_file}"
            )
        return f"stopped (bootstrap {self.bootstrap})"


def answers_metadata(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """True when a broker at `bootstrap` answers a metadata request within the timeout."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError:
        return False
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout_s * 1000),
            client_id="sentinel-probe",
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.describe_cluster()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


class EmbeddedBroker:
    """One KRaft broker+controller under `<state>/kafka`, started from jars under `<cache>/kafka`."""

    def __init__(
        self,
        settings: Settings,
        say: Say = print,
        *,
        listeners: dict[str, tuple[int, int]] | None = None,
    ) -> None:
        """`listeners` adds named plaintext listeners, NAME -> (port, advertised port) on the
        broker's host: clients that bootstrap through a proxy on the advertised port keep going
        through it (the chaos drill cuts an agent's path to the broker that way)."""
        self.settings = settings
        self.say = say
        self.listeners = dict(listeners or {})
        self.home = settings.kafka_state_dir
        self.data_dir = self.home / "data"
        self.logs_dir = self.home / "logs"
        self.pid_file = self.home / "broker.pid"
        self.properties_file = self.home / "server.properties"
        self.libs_dir = settings.cache_dir / "kafka" / settings.kafka_version / "libs"

    # ----------------------------------------------------------------- status
    @property
    def log_file(self) -> Path:
        return self.logs_dir / "server.log"

    def pid(self) -> int | None:
        """The pid of the broker this project started, if that process is still alive."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return None
        # A recycled pid is not ours: the command line must name our class and properties file.
        if MAIN_CLASS in cmdline and str(self.properties_file) in cmdline:
            return pid
        return None

    def status(self) -> BrokerStatus:
        bootstrap = self.settings.kafka_bootstrap
        if not self.settings.kafka_embedded:
            return BrokerStatus("external", bootstrap)
        pid = self.pid()
        if pid is None:
            return BrokerStatus("stopped", bootstrap, log_file=self.log_file)
        state: Literal["running", "unresponsive"] = (
            "running" if answers_metadata(bootstrap, timeout_s=3) else "unresponsive"
        )
        return BrokerStatus(state, bootstrap, pid, self.log_file)

    # ------------------------------------------------------------------- jars
    def ensure_jars(self) -> Path:
        """Fetch the broker's runtime jars once per version with the project's own pom.xml."""
        marker = self.libs_dir / ".complete"
        if marker.exists():
            return self.libs_dir
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError(
                f"Maven (mvn) is needed once to fetch the Kafka {self.settings.kafka_version} jars "
                f"into {self.libs_dir}: install Maven (Debian: apt-get install maven), or point "
                "SENTINEL_KAFKA_BOOTSTRAP at an existing Kafka cluster."
            )
        tmp = self.libs_dir.with_name(f"libs.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.say(
            f"fetching Apache Kafka {self.settings.kafka_version} jars from Maven Central "
            f"(once; cached in {self.libs_dir})"
        )
        started = time.monotonic()
        with resources.as_file(resources.files("sentinel.kafka") / "pom.xml") as pom:
            cmd = [
                mvn,
                "-B",
                "-q",
                "-f",
                str(pom),
                f"-Dkafka.version={self.settings.kafka_version}",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={tmp}",
            ]
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        jars = list(tmp.glob("*.jar"))
        if result.returncode != 0 or not any(j.name.startswith("kafka_2.13-") for j in jars):
            shutil.rmtree(tmp, ignore_errors=True)
            tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
            raise BrokerError(
                f"Maven could not fetch Kafka {self.settings.kafka_version} (exit "
                f"{result.returncode}):\n" + "\n".join(tail)
            )
        (tmp / ".complete").write_text(f"{len(jars)} jars\n")
        shutil.rmtree(self.libs_dir, ignore_errors=True)
        tmp.rename(self.libs_dir)
        self.say(f"fetched {len(jars)} jars in {time.monotonic() - started:.0f}s")
        return self.libs_dir

    # ---------------------------------------------------------------- storage
    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise BrokerError(
                "Java 17 or newer is needed to run the embedded Kafka broker: install a JRE "
                "(Debian: apt-get install openjdk-17-jre-headless), or point "
                "SENTINEL_KAFKA_BOOTSTRAP at an existing Kafka cluster."
            )
        return java

    def _classpath(self) -> str:
        return f"{self.libs_dir}/*"

    def write_config(self) -> None:
        s = self.settings
        host, port, controller = s.kafka_host, s.kafka_port, s.kafka_controller
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        extra = self.listeners
        listen = "".join(f",{name}://{host}:{p}" for name, (p, _) in extra.items())
        advertise = "".join(f",{name}://{host}:{a}" for name, (_, a) in extra.items())
        protocols = "".join(f",{name}:PLAINTEXT" for name in extra)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{host}:{controller}",
            "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller}{listen}",
            "advertised.listeners": (
                f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller}{advertise}"
            ),
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": (
                f"CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT{protocols}"
            ),
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            # Topics are declared (sentinel topics create, Faust, tests), never created by typos.
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.cleaner.enable": "true",
            "log.retention.hours": "168",
        }
        self.properties_file.write_text(
            "# written by `sentinel kafka up`; edit the settings, not this file\n"
            + "".join(f"{k}={v}\n" for k, v in props.items())
        )

    def formatted(self) -> bool:
        return (self.data_dir / "meta.properties").exists()

    def format_storage(self) -> None:
        java = self._java()
        cluster_id = _kafka_uuid()
        cmd = [
            java,
            "-cp",
            self._classpath(),
            STORAGE_TOOL,
            "format",
            "--standalone",
            "-t",
            cluster_id,
            "-c",
            str(self.properties_file),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed:\n{result.stdout}{result.stderr}")
        self.say(f"formatted KRaft storage in {self.data_dir} (cluster {cluster_id})")

    def reset(self) -> None:
        """Wipe the broker's data (topics, offsets); the next start formats it again."""
        if self.pid() is not None:
            raise BrokerError("the broker is running: stop it before wiping its data")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.say(f"wiped {self.data_dir}")

    # ---------------------------------------------------------- start / stop
    def start(self, *, reset: bool = False) -> BrokerStatus:
        """Start the broker unless ours already runs; return once it answers metadata."""
        if not self.settings.kafka_embedded:
            self.say(
                f"SENTINEL_KAFKA_BOOTSTRAP={self.settings.kafka_bootstrap}: using that cluster"
            )
            return BrokerStatus("external", self.settings.kafka_bootstrap)
        if reset:
            self.stop()
            self.reset()
        pid = self.pid()
        if pid is not None:
            self._wait_ready(pid)
            self.say(f"broker already running (pid {pid}) at {self.settings.kafka_bootstrap}")
            return self.status()
        if _port_open(self.settings.kafka_host, self.settings.kafka_port):
            raise BrokerError(
                f"{self.settings.kafka_bootstrap} is already in use by a process this project did "
                "not start. Stop it, or use it with SENTINEL_KAFKA_EXTERNAL=true, or choose "
                "another port with SENTINEL_KAFKA_BOOTSTRAP."
            )
        java = self._java()
        self.ensure_jars()
        self.write_config()
        if not self.formatted():
            self.format_storage()
        with resources.as_file(resources.files("sentinel.kafka") / "log4j2.properties") as log4j:
            cmd = [
                java,
                f"-Xmx{self.settings.kafka_heap}",
                "-Xms256m",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={log4j}",
                f"-Dkafka.logs.dir={self.logs_dir}",
                "-cp",
                self._classpath(),
                MAIN_CLASS,
                str(self.properties_file),
            ]
            stdout = (self.logs_dir / "stdout.log").open("ab")
            proc = subprocess.Popen(
                cmd,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.home,
            )
            stdout.close()
        self.pid_file.write_text(f"{proc.pid}\n")
        self.say(f"starting Kafka {self.settings.kafka_version} (pid {proc.pid}) ...")
        started = time.monotonic()
        self._wait_ready(proc.pid, proc)
        self.say(
            f"broker ready at {self.settings.kafka_bootstrap} in {time.monotonic() - started:.1f}s;"
            f" logs: {self.log_file}"
        )
        return self.status()

    def _wait_ready(self, pid: int, proc: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + self.settings.kafka_start_timeout_s
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise BrokerError(
                    f"the broker exited with code {proc.returncode} while starting:\n"
                    + self.tail(20)
                )
            if proc is None and not _alive(pid):
                raise BrokerError("the broker exited while starting:\n" + self.tail(20))
            if answers_metadata(self.settings.kafka_bootstrap, timeout_s=2):
                return
            time.sleep(0.5)
        raise BrokerError(
            f"the broker did not answer metadata within {self.settings.kafka_start_timeout_s:.0f}s"
            f" (pid {pid}); last log lines:\n" + self.tail(20)
        )

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker this project started (pid file); True if one was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            self.say(f"broker pid {pid} ignored SIGTERM for {timeout_s:.0f}s; killing it")
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        self.say(f"stopped broker (pid {pid}); data kept in {self.data_dir}")
        return True

    def tail(self, lines: int = 50) -> str:
        out: list[str] = []
        for path in (self.log_file, self.logs_dir / "stdout.log"):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(out) or f"(no logs yet in {self.logs_dir})"


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap our own child if it exited
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now, for a private broker or worker."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _kafka_uuid() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (as random-uuid does).

    Like Kafka's own Uuid.randomUuid, never one that starts with '-': the storage tool's argument
    parser would read it as an option.
    """
    import base64

    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not value.startswith("-"):
            return value
