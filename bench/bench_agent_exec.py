"""Agent exec benchmark: what the exec sensors cost and miss while a fork storm runs.

For each exec sensor (`procfs`, which polls /proc, and `bcc-exec`, which the kernel tells),
a child process runs the sensor and counts the exec events it yields; meanwhile a tiny C
program compiled here (gcc) vfork()+execve()s a uniquely named copy of a static, libc-free
program that exits at once (also compiled here) at a paced target rate (1k and 10k exec/s) for a few seconds and reports how many execs it actually did.
Measured per run:

- the sensor's CPU: user+system time of the sensor's process (all its threads: the BCC ring
  reader and event building, or the /proc scans) from the storm's start until the sensor has
  caught up, per second of storm, as % of one core;
- the execs missed: execs the storm performed minus exec events whose exe is the storm's
  binary (its name is unique, so nothing else matches);
- for bcc-exec, the in-kernel BPF time per exec (kernel.bpf_stats_enabled run_time_ns over
  the programs, per exec event): charged to the exec'ing processes, not to the sensor.

The achieved rate is reported as it is: with the libc-free target two cores reach 10k exec/s
(a dynamically linked /bin/true managed about 3k); below the target the storm runs as fast as
it can, with the sensor competing for the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import Result, write_section
from sentinel.settings import PROJECT_ROOT

SENSORS = ("procfs", "bcc-exec")
RATES = (1_000, 10_000)
CPU_TARGET = 10.0  # % of one core
TARGET_RATE = 10_000

STORM_C = r"""
/* storm BIN RATE SECONDS: vfork+execve BIN (argv = {BIN}) RATE times a second for SECONDS,
 * paced against the clock (behind schedule it does not sleep), reaping as it goes.
 * Prints: execs=<started> failed=<spawn or exit failures> elapsed=<s> */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: storm BIN RATE SECONDS\n"); return 2; }
    char *bin = argv[1];
    double rate = atof(argv[2]), secs = atof(argv[3]);
    char *cargv[] = { bin, NULL };
    char *cenv[] = { NULL };
    long done = 0, failed = 0;
    int st;
    double t0 = now(), t;
    while ((t = now() - t0) < secs) {
        if (done >= (long)(t * rate) + 1) {
            struct timespec pause = { 0, 50000 };
            nanosleep(&pause, NULL);
        } else {
            pid_t pid = vfork();
            if (pid == 0) { execve(bin, cargv, cenv); _exit(127); }
            if (pid < 0) failed++; else done++;
        }
        while (waitpid(-1, &st, WNOHANG) > 0)
            if (!WIFEXITED(st) || WEXITSTATUS(st)) failed++;
    }
    double elapsed = now() - t0;
    while (waitpid(-1, &st, 0) > 0)
        if (!WIFEXITED(st) || WEXITSTATUS(st)) failed++;
    printf("execs=%ld failed=%ld elapsed=%.4f\n", done, failed, elapsed);
    return 0;
}
"""

BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


# -- the sensor side (a child process) --------------------------------------------------------


def _bpf_prog_stats(sensor: Any) -> tuple[int, int]:
    """(run_time_ns, run_cnt) summed over the sensor's BPF programs (0s when not BCC)."""
    bpf = getattr(sensor, "bpf", None)
    total_ns = total_runs = 0
    for fn in getattr(bpf, "funcs", {}).values():
        try:
            info = Path(f"/proc/self/fdinfo/{fn.fd}").read_text()
        except OSError:
            continue
        for line in info.splitlines():
            key, _, value = line.partition(":")
            if key == "run_time_ns":
                total_ns += int(value)
            elif key == "run_cnt":
                total_runs += int(value)
    return total_ns, total_runs


def run_child(sensor_name: str, match: str) -> None:
    """Run one sensor until stdin says stop; report the counts as one JSON line on stdout."""
    from agents.agent import tune_gc
    from agents.sensors import create
    from sentinel.logs import configure_logging
    from sentinel.settings import Settings

    configure_logging(Settings())  # log lines to stderr: stdout carries the JSON replies
    sensor = create(sensor_name)
    missing = sensor.check()
    if missing:
        print(json.dumps({"error": "; ".join(missing)}), flush=True)
        return
    sensor.start()
    tune_gc()  # as the agent runs its sensors
    counts = {"seen": 0, "exec_events": 0, "events": 0}

    def consume() -> None:
        for event in sensor.events():
            counts["events"] += 1
            proc = event.get("proc")
            if proc and proc["action"] == "exec":
                counts["exec_events"] += 1
                if proc["exe"] == match:
                    counts["seen"] += 1

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() == "count":
            print(json.dumps({"seen": counts["seen"]}), flush=True)
        elif line.strip() == "stop":
            break
    bpf_ns, bpf_runs = _bpf_prog_stats(sensor)
    sensor.stop()
    thread.join(10)
    print(
        json.dumps({**counts, "counters": sensor.counters, "bpf_ns": bpf_ns, "bpf_runs": bpf_runs}),
        flush=True,
    )


# -- the driver ---------------------------------------------------------------------------


# The program the storm runs: static, no libc, exits at once, so an exec costs the kernel's
# part only (no dynamic loader, no library mappings) and two cores get close to 10k exec/s.
TINY_C = r"""
void _start(void) { __asm__ volatile("mov $60, %eax\n xor %edi, %edi\n syscall"); }
"""


def build_storm(tmp: Path) -> Path:
    source = tmp / "storm.c"
    source.write_text(STORM_C)
    binary = tmp / "storm"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(source)], check=True)
    tiny = tmp / "tiny.c"
    tiny.write_text(TINY_C)
    subprocess.run(
        ["gcc", "-O2", "-static", "-nostdlib", "-o", str(tmp / "tiny"), str(tiny)], check=True
    )
    return binary


def _parse_storm(out: str) -> dict[str, float]:
    fields = dict(part.split("=", 1) for part in out.split())
    return {k: float(v) for k, v in fields.items()}


def storm(storm_bin: Path, target: Path, rate: int, seconds: float, workers: int) -> dict[str, Any]:
    """Run `workers` storm processes at rate/workers each; the totals they report."""
    procs = [
        subprocess.Popen(
            [str(storm_bin), str(target), str(rate / workers), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    reports = [_parse_storm(p.communicate()[0]) for p in procs]
    elapsed = max(r["elapsed"] for r in reports)
    execs = int(sum(r["execs"] for r in reports))
    return {
        "execs": execs,
        "failed": int(sum(r["failed"] for r in reports)),
        "elapsed": elapsed,
        "rate": execs / elapsed if elapsed else 0.0,
    }


def _cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def measure(
    sensor: str, rate: int, seconds: float, workers: int, storm_bin: Path, tmp: Path
) -> dict[str, Any]:
    target = tmp / f"sl-storm-tiny-{uuid.uuid4().hex[:12]}"
    shutil.copy(tmp / "tiny", target)
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_agent_exec", "--child", sensor, "--match", str(target)],
        cwd=PROJECT_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        hello = json.loads(child.stdout.readline() or "{}")
        if not hello.get("ready"):
            raise RuntimeError(f"{sensor} did not start: {hello.get('error', hello)}")
        time.sleep(1.0)  # the sensor's start-up work (baseline scan, first poll) is done
        cpu0 = _cpu_seconds(child.pid)
        done = storm(storm_bin, target, rate, seconds, workers)
        # wait until the sensor has caught up: its count stops growing (at most 10 s)
        last, stable_since, deadline = -1, time.monotonic(), time.monotonic() + 10
        while time.monotonic() < deadline:
            child.stdin.write("count\n")
            child.stdin.flush()
            seen = int(json.loads(child.stdout.readline())["seen"])
            if seen >= done["execs"]:
                break
            if seen != last:
                last, stable_since = seen, time.monotonic()
            elif time.monotonic() - stable_since > 1.5:
                break
            time.sleep(0.25)
        cpu1 = _cpu_seconds(child.pid)
        child.stdin.write("stop\n")
        child.stdin.flush()
        report = json.loads(child.stdout.readline())
    finally:
        if child.poll() is None:
            child.stdin.close()
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        target.unlink(missing_ok=True)
    cpu = cpu1 - cpu0
    return {
        **done,
        "sensor": sensor,
        "requested": rate,
        "seen": report["seen"],
        "lost": done["execs"] - report["seen"],
        "cpu_s": cpu,
        "cpu_pct": cpu / done["elapsed"] * 100,
        "exec_events": report["exec_events"],
        "counters": report["counters"],
        "bpf_ns_per_exec": report["bpf_ns"] / max(report["exec_events"], 1),
    }


def _set_bpf_stats(value: str) -> str | None:
    try:
        old = BPF_STATS.read_text().strip()
        BPF_STATS.write_text(value)
        return old
    except OSError:
        return None


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="storm length per run")
    parser.add_argument(
        "--rates", default=",".join(map(str, RATES)), help="target exec/s, comma-separated"
    )
    parser.add_argument("--sensors", default=",".join(SENSORS), help="sensors to measure")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="storm processes (one per core)"
    )
    parser.add_argument("--no-write", action="store_true", help="do not update PERFORMANCE.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--match", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.child, args.match)
        return []

    rates = [int(r) for r in args.rates.split(",") if r]
    sensors = [s for s in args.sensors.split(",") if s]
    runs: list[dict[str, Any]] = []
    old_stats = _set_bpf_stats("1")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-agent-exec-") as tmp:
            storm_bin = build_storm(Path(tmp))
            for sensor in sensors:
                for rate in rates:
                    run = measure(sensor, rate, args.seconds, args.workers, storm_bin, Path(tmp))
                    runs.append(run)
                    print(
                        f"  {sensor} @ {rate:,}/s: {run['execs']:,} execs in "
                        f"{run['elapsed']:.1f}s ({run['rate']:,.0f}/s achieved), seen "
                        f"{run['seen']:,}, missed {run['lost']:,}; sensor CPU "
                        f"{run['cpu_s']:.2f}s = {run['cpu_pct']:.1f}% of a core; "
                        f"counters {run['counters']}"
                        + (
                            f"; BPF {run['bpf_ns_per_exec'] / 1000:.1f} us/exec in kernel"
                            if sensor.startswith("bcc")
                            else ""
                        ),
                        flush=True,
                    )
    finally:
        if old_stats is not None:
            _set_bpf_stats(old_stats)

    results = rows(runs, args.workers)
    for r in results:
        print(r.row())
    if not args.no_write:
        write_section(
            "agent-exec",
            f"python -m bench.bench_agent_exec --seconds {args.seconds:g} --rates {args.rates}",
            results,
            "A fork storm (vfork+execve of a uniquely named static, libc-free program, paced, one "
            f"process per core: {args.workers}) against one sensor at a time in its own "
            "process. CPU: the sensor process's user+system time from the storm's start until "
            "it had caught up, per second of storm. Missed: execs done minus exec events of "
            "the storm's binary. BPF time in the kernel is charged to the exec'ing processes.",
        )
    return results


def rows(runs: list[dict[str, Any]], workers: int) -> list[Result]:
    results: list[Result] = []
    for run in runs:
        bcc = run["sensor"] == "bcc-exec"
        per_exec_us = run["cpu_s"] / max(run["execs"], 1) * 1e6
        note = (
            f"{run['execs']:,} execs in {run['elapsed']:.1f} s = {run['rate']:,.0f}/s achieved "
            f"({workers} storm processes); {per_exec_us:.1f} us of sensor CPU per storm exec"
        )
        if bcc:
            note += f"; in-kernel BPF {run['bpf_ns_per_exec'] / 1000:.1f} us per exec"
        results.append(
            Result(
                "agent-exec",
                f"{run['sensor']} CPU at {run['requested']:,} exec/s requested",
                run["cpu_pct"],
                "% of a core",
                f"< {CPU_TARGET:g}%" if bcc else "",
                (run["cpu_pct"] < CPU_TARGET) if bcc else None,
                note,
            )
        )
        results.append(
            Result(
                "agent-exec",
                f"{run['sensor']} execs missed at {run['requested']:,} exec/s requested",
                run["lost"],
                "execs",
                "0" if bcc else "",
                (run["lost"] == 0) if bcc else None,
                f"{run['seen']:,} of {run['execs']:,} seen; lost counter "
                f"{run['counters'].get('lost', 0)}",
            )
        )
    top = [r for r in runs if r["sensor"] == "bcc-exec" and r["requested"] == TARGET_RATE]
    if top:
        run = top[0]
        reached = run["rate"] >= 0.95 * TARGET_RATE
        results.append(
            Result(
                "agent-exec",
                "bcc-exec loses none at 10k exec/s while staying under 10% of a core",
                run["cpu_pct"],
                "% of a core",
                "0 missed, < 10%, at >= 10,000 exec/s",
                run["lost"] == 0 and run["cpu_pct"] < CPU_TARGET and reached,
                f"{run['lost']:,} missed at {run['rate']:,.0f} exec/s achieved"
                + ("" if reached else " (the storm could not reach 10k/s on this machine)"),
            )
        )
    return results


if __name__ == "__main__":
    main()
