"""Figures of the single executable: size, start to first 200 on /health, idle RSS (launcher + server).

``make bench`` puts them in its table beside the reference's start time and RSS (``start_samples``,
alternating A B five times). Alone: ``.venv/bin/python bench/binary.py [path]`` after ``make binary``
(default ``dist/opentermd``).
Each start uses a fresh TMPDIR, so every run pays the full onefile extraction, as a first start would.
Exit status: 0 when every target is met, 1 when one is missed, 2 when the binary could not run.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

if __package__ in (None, ""):  # run as a script, `python bench/binary.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    BINARY,
    HOST,
    BenchError,
    Report,
    Sample,
    Server,
    children,
    daemon_environment,
    free_port,
)

REPO = Path(__file__).resolve().parent.parent
STARTS = 5
START_TIMEOUT = 30.0
IDLE_SETTLE = 1.0
#: 40 MB until issue 12; then measured 48.5 MB: document text (lxml 3.2 MB with etree stored compressed,
#: python-docx, openpyxl, xlrd and striprtf 1.1 MB) and notebooks (jupyter_client, pyzmq with libzmq and
#: their Python, about 4 MB), plus 1.5 MB of margin. Issue 13: 51.7 MB with Pillow for thumbnails (3.2 MB:
#: its decoders and libjpeg/libwebp/libtiff, stored compressed; fonts, colour profiles and AVIF left out in
#: build.spec) and mdit-py-plugins, so 55.
MAX_SIZE_MB = 55.0
MAX_START_S = 0.6
MAX_RSS_MB = 50.0


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0  # a zombie has no memory left


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far (a figure the machine's other load barely moves)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_once(command: list[str], port: int, run: Path, measure_rss: bool) -> tuple[float, float, float]:
    """Seconds from exec to the first 200 on /health, the CPU seconds spent by then (the process and
    its children), and the idle RSS in MB (0 unless measured). `run` gets a fresh HOME and TMPDIR."""
    for folder in ("home", "tmp"):
        (run / folder).mkdir(parents=True)
    env = daemon_environment(HOME=str(run / "home"), TMPDIR=str(run / "tmp"), XDG_STATE_HOME=str(run / "state"))
    began = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        elapsed = 0.0
        while elapsed < START_TIMEOUT:
            if process.poll() is not None:
                raise BenchError(f"{command[0]} exited with {process.returncode} before answering /health")
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(0.005)
            elapsed = time.perf_counter() - began
        else:
            raise BenchError(f"no 200 on /health within {START_TIMEOUT:.0f} s")
        family = [process.pid, *children(process.pid)]
        cpu = sum(cpu_seconds(pid) for pid in family)
        rss = 0.0
        if measure_rss:
            time.sleep(IDLE_SETTLE)
            rss = sum(rss_kb(pid) for pid in family) / 1024
        return elapsed, cpu, rss
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def binary_command(binary: Path, port: int, home: Path) -> list[str]:
    return [str(binary), "run", "--host", HOST, "--port", str(port), f"--api-key={secrets.token_urlsafe(24)}",
            "--cwd", str(home)]


# --- in make bench's table: one start of each server per round, alternating ---------------------------


def start_samples(server: Server, report: Report, *, starts: int = STARTS) -> list[Sample]:
    """One fresh start of `server`'s program (beside the instance under test): the start time, the idle
    RSS of the whole process tree, and the executable's size when the program is the binary.
    `starts` is how many rounds make the median, for the label."""
    port = free_port()
    command, _ = server.command(port)
    run = Path(tempfile.mkdtemp(prefix=f"start-{server.label}-", dir=server.scratch))
    try:
        seconds, _, rss = start_once(command, port, run, measure_rss=True)
    finally:
        shutil.rmtree(run, ignore_errors=True)
    samples = [Sample(f"start to first 200 on /health (median of {starts})", seconds, "s", "lower", MAX_START_S,
                      digits=3),
               Sample("idle RSS (launcher + server)", rss, "MB", "lower", MAX_RSS_MB)]
    if command[0] == str(BINARY):
        samples.insert(0, Sample("binary size", BINARY.stat().st_size / 1024**2, "MB", "lower", MAX_SIZE_MB))
    return samples


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    binary = Path(args[0] if args else REPO / "dist" / "opentermd").resolve()
    if not binary.is_file():
        print(f"{binary} is missing: run `make binary` first", file=sys.stderr)
        return 2
    size = binary.stat().st_size / 1024**2
    with tempfile.TemporaryDirectory(prefix="opentermd-binary-bench-") as scratch:
        try:
            runs = []
            for index in range(STARTS):
                port = free_port()
                run = Path(scratch) / f"run-{port}"
                runs.append(start_once(binary_command(binary, port, run / "home"), port, run,
                                       measure_rss=index == STARTS - 1))
        except BenchError as exc:
            print(f"bench/binary.py: {exc}", file=sys.stderr)
            return 2
    start = statistics.median(seconds for seconds, _, _ in runs)
    cpu = statistics.median(cpu for _, cpu, _ in runs)
    rss = runs[-1][2]
    rows = [("binary size", f"{size:.1f} MB", f"<= {MAX_SIZE_MB:g} MB", size <= MAX_SIZE_MB),
            (f"start to first 200 on /health (median of {STARTS})", f"{start:.3f} s", f"<= {MAX_START_S:g} s",
             start <= MAX_START_S),
            ("idle RSS, launcher + server", f"{rss:.1f} MB", f"<= {MAX_RSS_MB:g} MB", rss <= MAX_RSS_MB)]
    print(f"{binary}  (starts: {', '.join(f'{seconds:.3f}' for seconds, _, _ in runs)} s; "
          f"CPU by the first 200, median: {cpu:.3f} s; load average {os.getloadavg()[0]:.2f})")
    for name, value, target, ok in rows:
        print(f"{name:<48} {value:>10}  {target:<10} {'pass' if ok else 'FAIL'}")
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
