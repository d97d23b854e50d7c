"""What every benchmark module shares: the servers under test, the A/B alternation, the client session
and the report table."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
REQUEST_TIMEOUT = 30.0
#: Wrong answers quoted on stderr; the rest are only counted.
QUOTED_PROBLEMS = 10

Json = dict[str, Any]

#: What a workload may raise when the daemon misbehaves or the network fails; anything else is a bug.
WORKLOAD_ERRORS = (aiohttp.ClientError, TimeoutError, OSError, KeyError, ValueError, TypeError)


class BenchError(Exception):
    """The daemon or the benchmark failed; the run has no figures worth reporting."""


def describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class Latency:
    samples_ms: list[float]
    failures: int

    @property
    def p50(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p95(self) -> float:
        ordered = sorted(self.samples_ms)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]  # nearest rank

    @property
    def max(self) -> float:
        return max(self.samples_ms)


@dataclass(frozen=True)
class Row:
    workload: str
    reference: str  # the reference's median, or "n/a"
    figure: str  # opentermd's median
    ratio: str
    target: str
    result: str  # PASS, FAIL or "-" (reported only)

    def cells(self) -> tuple[str, ...]:
        return (self.workload, self.reference, self.figure, self.ratio, self.target, self.result)


@dataclass
class Report:
    """What the workloads found: table rows, wrong answers (exit 1), and workloads that broke (exit 2)."""

    rows: list[Row] = field(default_factory=list)
    #: The first few distinct wrong answers, quoted on stderr; `wrong_count` counts them all.
    wrong: list[str] = field(default_factory=list)
    wrong_count: int = 0
    errors: list[str] = field(default_factory=list)
    #: What the table cannot show (why a reference figure is n/a).
    notes: list[str] = field(default_factory=list)

    def wrong_answer(self, problem: str) -> None:
        self.wrong_count += 1
        if len(self.wrong) < QUOTED_PROBLEMS and problem not in self.wrong:
            self.wrong.append(problem)


# --- the servers ----------------------------------------------------------------------------------

#: The reference server's own venv (`make bench` installs `open-terminal==0.14.5` there).
REFERENCE_BIN = REPO / ".bench" / "bin" / "open-terminal"
BINARY = REPO / "dist" / "opentermd"
HEALTH_POLL = 0.05


def daemon_environment(**settings: str) -> dict[str, str]:
    """Our environment without any daemon setting of the caller's (it would change what is measured)."""
    ours = ("OPEN_TERMINAL_", "OPENTERMD_")
    inherited = {key: value for key, value in os.environ.items() if not key.startswith(ours)}
    return {**inherited, **settings}


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                found.append(int(entry))
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """One server under test on a free loopback port, its cwd the shared scratch directory and its
    HOME a scratch directory of its own. `opentermd` runs `dist/opentermd` when that binary exists,
    else `python -m daemon`; `reference` runs `.bench/bin/open-terminal`."""

    def __init__(self, scratch: Path, name: str = "opentermd", *, label: str | None = None,
                 settings: Mapping[str, str] | None = None, prefix: Sequence[str] = ()) -> None:
        if name not in ("opentermd", "reference"):
            raise ValueError(f"unknown server {name!r}")
        self.name = name
        #: How the table names it (the smoke run measures opentermd twice, as A and as B).
        self.label = label or name
        self.scratch = scratch
        self.key = secrets.token_urlsafe(24)
        self.home = scratch / f"home-{self.label}"
        self.stderr_path = scratch / f"{self.label}.stderr"
        self.port = 0
        #: `OPEN_TERMINAL_*` settings of this run, and a command that runs the server (such as prlimit).
        self.settings = dict(settings or {})
        self.prefix = list(prefix)
        self._process: subprocess.Popen[bytes] | None = None
        self._launcher = False  # runs the onefile binary, whose server is the launcher's child

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def state_dir(self) -> Path:
        """opentermd's state directory, from the XDG_STATE_HOME `start` gives it."""
        return self.home / "state" / "opentermd"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise BenchError(f"{self.label} is not running")
        return self._process.pid

    def serving_pid(self) -> int:
        """The process that serves requests: the binary's onefile launcher runs it as its only child."""
        pid = self.pid
        if not self._launcher:
            return pid
        found = children(pid)
        if len(found) != 1:
            raise BenchError(f"the launcher {pid} of {self.label} has {len(found)} children, not one server")
        return found[0]

    def command(self, port: int) -> tuple[list[str], str]:
        """The command line (the key as `--api-key=K`: a key may start with "-") and what it runs."""
        options = ["run", "--host", HOST, "--port", str(port), f"--api-key={self.key}", "--cwd", str(self.scratch)]
        if self.name == "reference":
            if not REFERENCE_BIN.exists():
                raise BenchError(f"{REFERENCE_BIN} is missing: `make bench` installs open-terminal==0.14.5 there")
            return [str(REFERENCE_BIN), *options], f"open-terminal 0.14.5 ({REFERENCE_BIN.relative_to(REPO)})"
        if BINARY.exists():
            return [str(BINARY), *options], f"the binary {BINARY.relative_to(REPO)}"
        return [sys.executable, "-m", "daemon", *options], "python -m daemon (no dist/opentermd)"

    def start(self) -> str:
        """Start it and wait for `/health`; returns what runs, for the log."""
        self.home.mkdir(exist_ok=True)
        self.port = free_port()
        command, what = self.command(self.port)
        self._launcher = command[0] == str(BINARY)
        env = daemon_environment(HOME=str(self.home), SHELL="/bin/bash", XDG_STATE_HOME=str(self.home / "state"),
                                 OPEN_TERMINAL_API_KEY=self.key, **self.settings)
        with self.stderr_path.open("wb") as log:
            self._process = subprocess.Popen([*self.prefix, *command], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT)
        self._await_health()
        return what

    def _await_health(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        polls = 0
        while time.monotonic() < deadline and polls < STARTUP_TIMEOUT / HEALTH_POLL + 10:
            polls += 1
            if self._process is not None and self._process.poll() is not None:
                raise BenchError(f"{self.label} exited with {self._process.returncode} before answering "
                                 f"/health{self._stderr_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(HEALTH_POLL)
        raise BenchError(f"{self.label} did not answer /health within {STARTUP_TIMEOUT:.0f} s{self._stderr_tail()}")

    def stop(self) -> str | None:
        """SIGTERM and wait; returns a problem to report, or None after a clean exit."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return None if process is None else f"{self.label} died during the run (exit {process.returncode})"
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
            return f"{self.label} ignored SIGTERM for {STOP_TIMEOUT:.0f} s and was killed"
        # uvicorn (the reference) ends by re-raising the SIGTERM it handled: that is its clean exit.
        clean = (0, -signal.SIGTERM) if self.name == "reference" else (0,)
        return None if code in clean else f"{self.label} exited with status {code} after SIGTERM{self._stderr_tail()}"

    def _stderr_tail(self, lines: int = 20) -> str:
        try:
            tail = self.stderr_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"\n--- {self.label} output ---\n" + "\n".join(tail) if tail else ""


#: The name the workloads use.
Daemon = Server


def servers_for(scratch: Path, smoke: bool) -> list[Server]:
    """A then B: the reference and opentermd, or (smoke) opentermd twice."""
    if smoke:
        return [Server(scratch, label="opentermd-A"), Server(scratch, label="opentermd-B")]
    return [Server(scratch, "reference"), Server(scratch, "opentermd")]


# --- the client -------------------------------------------------------------------------------------


def open_session(key: str, *, json_body: bool = True, limit: int = 4) -> aiohttp.ClientSession:
    """A keep-alive session that sends the key; `json_body` adds `Content-Type: application/json`
    to every request (leave it off when some requests carry another body, such as multipart)."""
    headers = {"Authorization": f"Bearer {key}"}
    if json_body:
        headers["Content-Type"] = "application/json"
    connector = aiohttp.TCPConnector(limit=limit)
    # No cookies to keep, and URLs parsed once by the callers: the client's share of each round trip stays small.
    return aiohttp.ClientSession(headers=headers, connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                 timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))


async def fetch(session: aiohttp.ClientSession, method: str, url: str | URL, body: Any = None,
                **options: Any) -> bytes:
    """The body of a 200 reply, or a BenchError that quotes the status and the start of the body."""
    async with session.request(method, url, data=body, **options) as response:
        payload = await response.read()
        if response.status != 200:
            raise BenchError(f"{method} {url} answered {response.status}: {payload[:300]!r}")
    return payload


def joined_output(reply: Json) -> str:
    """The text a process printed, from an /execute or status reply."""
    return "".join(entry.get("data", "") for entry in reply.get("output", []) if entry.get("type") == "output")


def parse_object(payload: bytes, what: str) -> Json:
    reply = json.loads(payload)
    if not isinstance(reply, dict):
        raise BenchError(f"{what} answered with a {type(reply).__name__}, not an object")
    return reply


async def call(session: aiohttp.ClientSession, method: str, url: str | URL, body: Any = None,
               **options: Any) -> Json:
    """A JSON object from a 200 reply."""
    return parse_object(await fetch(session, method, url, body, **options), f"{method} {url}")


# --- figures and the A/B alternation ---------------------------------------------------------------

#: Rounds of every workload; each round measures A then B (A B A B A B).
ROUNDS = 3


@dataclass(frozen=True)
class Sample:
    """One figure of one round on one server, with what makes it good for opentermd.

    `better` is "higher", "lower" or "" (reported only: no ratio). The target is `relative` (opentermd
    at least that many times better than the reference, by the ratio of medians) when set and the
    reference was measured, else `limit` (absolute, in `unit`); `target` overrides how it is printed."""

    label: str
    value: float
    unit: str = ""
    better: str = ""
    limit: float | None = None
    relative: float | None = None
    digits: int = 1
    target: str = ""

    def text(self, value: float) -> str:
        if self.unit == "req/s" and value >= 100:
            return f"{value:,.0f} req/s"
        number = f"{value:,.{self.digits}f}"
        return f"{number} {self.unit}" if self.unit else number

    def goal(self, limit: float | None) -> str:
        if self.target:
            return self.target
        if self.relative is not None:
            also = f" (else >= {self.text(limit)})" if limit is not None else ""
            return f">= {self.relative:g}x ref{also}"
        if limit is None:
            return "(report)"
        sign = ">=" if self.better == "higher" else "<="
        return f"{sign} {self.text(limit)}"


@dataclass
class Outcome:
    """What one workload gave on one server over the rounds: samples per round, wrong answers, a failure."""

    label: str
    rounds: list[list[Sample]] = field(default_factory=list)
    report: Report = field(default_factory=lambda: Report())
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.error is None and self.report.wrong_count == 0 and bool(self.rounds)

    def why_not(self) -> str:
        return self.error or (self.report.wrong[0] if self.report.wrong else "no round completed")

    def medians(self) -> dict[str, float]:
        values: dict[str, list[float]] = {}
        for samples in self.rounds:
            for sample in samples:
                values.setdefault(sample.label, []).append(sample.value)
        return {label: statistics.median(figures) for label, figures in values.items()}


#: One round of a workload on one server, its wrong answers going to the report given.
Measure = Callable[["Server", Report], list[Sample]]


def alternate(servers: Sequence[Server], measure: Measure, rounds: int = ROUNDS) -> list[Outcome]:
    """Run `measure` on each server in turn, `rounds` times (A B A B ...); one Outcome per server.

    A server whose round broke (a BenchError or one of WORKLOAD_ERRORS) or answered wrong is not
    measured again."""
    outcomes = [Outcome(server.label) for server in servers]
    for _ in range(rounds):
        for server, outcome in zip(servers, outcomes, strict=True):
            if outcome.error is not None or outcome.report.wrong_count:
                continue  # its figures cannot be shown: no point measuring it again
            try:
                outcome.rounds.append(measure(server, outcome.report))
            except (BenchError, *WORKLOAD_ERRORS) as exc:
                outcome.error = describe(exc)
    return outcomes


def measure_workload(servers: Sequence[Server], name: str, measure: Measure, report: Report) -> None:
    """One workload alternating the servers (opentermd last), its rows added to the report; a workload
    that breaks is reported as such and the others still run."""
    try:
        outcomes = alternate(servers, measure)
        report.rows.extend(rows_of(outcomes[0] if len(outcomes) > 1 else None, outcomes[-1], report))
    except (BenchError, *WORKLOAD_ERRORS) as exc:
        report.errors.append(f"{name}: {describe(exc)}")
        report.rows.append(Row(name, "-", "error", "-", "-", "FAIL"))


def check_alternation() -> None:
    """The alternation's own unit check (run by --smoke): order, rounds, medians and a failing side."""
    order: list[str] = []

    def measure(server: Server, report: Report) -> list[Sample]:
        order.append(server.label)
        if server.label == "B" and len(order) > 4:
            raise BenchError("B broke in round 3")
        return [Sample("x", float(len(order)))]

    scratch = Path("/nonexistent")
    first, second = alternate([Server(scratch, label="A"), Server(scratch, label="B")], measure)
    if order != ["A", "B", "A", "B", "A", "B"]:
        raise BenchError(f"alternation ran {order}, not A B A B A B")
    if first.medians() != {"x": 3.0} or not first.valid or second.valid or second.medians() != {"x": 3.0}:
        raise BenchError(f"alternation outcomes wrong: {first!r}, {second!r}")


# --- the report -------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def megabytes(size: int) -> str:
    return f"{size / 1e6:.0f} MB" if size >= 10_000_000 else f"{size / 1e6:.1f} MB"


def ratio_of(sample: Sample, ours: float, reference: float) -> float | None:
    """How many times better opentermd is (>1: opentermd wins), or None when it means nothing."""
    if sample.better == "higher" and reference > 0:
        return ours / reference
    if sample.better == "lower" and ours > 0:
        return reference / ours
    return None


def rows_of(reference: Outcome | None, ours: Outcome, report: Report, *,
            rewrite: Callable[[str], str] = lambda label: label) -> list[Row]:
    """Table rows for one workload from both outcomes; records opentermd's wrong answers and failures."""
    for problem in ours.report.wrong:
        report.wrong_answer(problem)
    report.wrong_count += ours.report.wrong_count - len(ours.report.wrong)
    if ours.error is not None:
        report.errors.append(f"{ours.label}: {ours.error}")
    if reference is not None and not reference.valid:
        report.notes.append(f"{reference.label} n/a: {reference.why_not()}")
    ref_medians = reference.medians() if reference is not None and reference.valid else {}
    our_medians = ours.medians()
    specs: dict[str, Sample] = {}
    limits: dict[str, list[float]] = {}
    for samples in ((reference.rounds if reference else []) + ours.rounds):
        for sample in samples:
            specs.setdefault(sample.label, sample)
            if sample.limit is not None:
                limits.setdefault(sample.label, []).append(sample.limit)
    if not specs:
        return [Row(rewrite("(no figures)"), "n/a", "error", "-", "-", "FAIL")]
    rows: list[Row] = []
    for label, spec in specs.items():
        limit = statistics.median(limits[label]) if label in limits else None
        mine, theirs = our_medians.get(label), ref_medians.get(label)
        ratio = ratio_of(spec, mine, theirs) if mine is not None and theirs is not None else None
        if mine is None or ours.error is not None:
            result = "FAIL"
        elif spec.relative is not None and ratio is not None:
            result = verdict(ratio >= spec.relative)
        elif limit is not None:
            result = verdict(mine >= limit if spec.better == "higher" else mine <= limit)
        else:
            result = "-"
        rows.append(Row(rewrite(label), spec.text(theirs) if theirs is not None else "n/a",
                        spec.text(mine) if mine is not None else "error",
                        f"{ratio:.2f}x" if ratio is not None else "-", spec.goal(limit), result))
    return rows


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_facts(smoke: bool) -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    mode = " (smoke)" if smoke else ""
    return (f"opentermd bench{mode}: nproc {cpus}, {cpu_model()}, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()} {platform.machine()}, {now}")


HEADER = ("workload", "reference", "opentermd", "ratio", "target", "result")


def table_lines(table: list[Row], header: tuple[str, ...] = HEADER) -> list[str]:
    cells = [header, *(row.cells() for row in table)]
    widths = [max(len(line[column]) for line in cells) + 2 for column in range(len(header) - 1)]
    return ["".join(cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=True)) + line[-1]
            for line in cells]


def print_table(table: list[Row], header: tuple[str, ...] = HEADER) -> None:
    for line in table_lines(table, header):
        print(line)


def run_alone(run: Callable[[list[Server], bool, Report], None], argv: Sequence[str], name: str) -> int:
    """A benchmark module's workloads alone (its `main`): the reference and opentermd, or, with --smoke,
    opentermd twice; the table on stdout, problems on stderr, and run.py's exit status."""
    smoke = "--smoke" in argv
    scratch = Path(tempfile.mkdtemp(prefix=f"opentermd-bench-{name}-"))
    servers = servers_for(scratch, smoke)
    report = Report()
    try:
        for server in servers:
            print(f"bench: {server.label} is {server.start()}, on {server.base_url}", flush=True)
        run(servers, smoke, report)
    finally:
        report.errors.extend(problem for problem in (server.stop() for server in servers) if problem)
        shutil.rmtree(scratch, ignore_errors=True)
    print_table(report.rows, (HEADER[0], *(server.label for server in servers), *HEADER[3:]))
    for line in (*report.notes, *report.wrong, *report.errors):
        print(f"bench: {line}", file=sys.stderr)
    return 2 if report.errors else 1 if report.wrong_count else 0


def markdown(table: list[Row], facts: str, notes: list[str], servers: list[str]) -> str:
    lines = ["# Benchmarks", "",
             "The latest `make bench` run (`bench/run.py --write`): every workload against the reference server",
             "(open-terminal 0.14.5) and opentermd, alternating A B A B A B (3 rounds); figures are medians of",
             "the rounds. *ratio* is how many times better opentermd is (reference time / opentermd time, or",
             "opentermd rate / reference rate). Targets are opentermd's; \"x ref\" targets pass on the ratio.",
             "*n/a*: the reference gave a wrong answer or lacks the feature (see the notes).", "",
             f"Machine: {facts}", "", *(f"- {server}" for server in servers), "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row.cells()) + " |" for row in table]
    if notes:
        lines += ["", "Notes:", "", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"
