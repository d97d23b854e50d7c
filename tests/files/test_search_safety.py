"""Searches cannot stall or outlive the daemon: catastrophic regexes, disconnects, deadlines, /proc,
FIFOs and device nodes, each reproduced over a real server (and a real ripgrep where it matters)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import stat
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.errors import ApiError
from daemon.files import mounts, patterns
from tests.conftest import Api, ApiFactory, eventually, needs_host_view, process_stats, wait_until
from tests.files.test_search import RG, engine, get, write  # noqa: F401 - engine: a fixture, ripgrep on PATH or not

#: Bounds a failing test only: a passing one answers in milliseconds.
DEADLINE = 20.0
CATASTROPHIC = "(a+)+$"
#: A pattern ripgrep's engine runs slowly (Unicode word boundaries) over `slow_text`, without matching.
SLOW_FOR_RG = r"(\b\w+\b\s*){8}\d"
#: Looked up now: the `engine` fixture's PATH holds only git and find.
MOUNT, UMOUNT = shutil.which("mount") or "mount", shutil.which("umount") or "umount"


def rg_children(parent: int, marker: str) -> list[int]:
    """Live (non-zombie) ripgrep processes started by `parent` whose command line names `marker`."""
    found = []
    for pid, fields in process_stats().items():
        if fields[0] == "Z" or int(fields[1]) != parent:
            continue
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if os.path.basename(command[0]) == b"rg" and any(marker.encode() in part for part in command):
            found.append(pid)
    return found


def gone(pid: int) -> bool:
    """No such process, not even a zombie waiting to be reaped."""
    return not Path(f"/proc/{pid}").exists()


def slow_text(path: Path, megabytes: int = 60) -> None:
    """Text ripgrep needs seconds for with SLOW_FOR_RG: long enough to be seen (and stopped) running."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = ("é" * 40 + " ") * 2 + "\n"
    with path.open("w") as out:
        out.write(line * (megabytes * 1024 * 1024 // len(line.encode())))


async def health_and(api: Api, endpoint: str, **params: Any) -> Any:
    """A search and /health at once; both must answer (the search had frozen every thread)."""
    async def health() -> Any:
        return await api.json("GET", "/health")

    search, healthy = await asyncio.wait_for(asyncio.gather(get(api, endpoint, **params), health()), DEADLINE)
    assert healthy == {"status": "ok"}
    return search


# --- 1. no regex freezes the daemon ------------------------------------------------------------------


@pytest.mark.usefixtures("engine")
async def test_a_catastrophic_regex_over_one_file_answers_at_once(api: Api, home: Path) -> None:
    write(home, {"evil.txt": "a" * 30 + "!\n", "fine.txt": "aaa\n"})
    reply = await health_and(api, "grep", query=CATASTROPHIC, path="evil.txt")
    assert reply["matches"] == [] and reply["truncated"] is False
    assert [m["line"] for m in (await get(api, "grep", query=CATASTROPHIC, path="fine.txt"))["matches"]] == [1]


@pytest.mark.usefixtures("engine")
async def test_a_catastrophic_regex_over_a_folder_answers_at_once(api: Api, home: Path) -> None:
    write(home, {"d/evil.txt": "a" * 30 + "!\n", "d/fine.txt": "aaa\n"})
    reply = await health_and(api, "grep", query=CATASTROPHIC, path="d")
    assert [os.path.basename(m["file"]) for m in reply["matches"]] == ["fine.txt"]
    # Files only (ripgrep's --max-count path) and case-insensitively: the same engine.
    reply = await health_and(api, "grep", query=CATASTROPHIC, path="d", match_per_line="false",
                             case_insensitive="true")
    assert [os.path.basename(m["file"]) for m in reply["matches"]] == ["fine.txt"]


@pytest.mark.usefixtures("engine")
async def test_globs_run_on_a_linear_time_engine_too(api: Api, home: Path) -> None:
    write(home, {"a" * 60: "needle\n", "ab.txt": "needle\n"})
    many_stars = "*a" * 30 + "b"
    assert (await health_and(api, "glob", pattern=many_stars))["matches"] == []
    reply = await health_and(api, "grep", query="needle", include=many_stars)
    assert reply["matches"] == []


@pytest.mark.usefixtures("engine")
async def test_oversized_patterns_are_refused(api: Api, home: Path) -> None:
    write(home, {"f.txt": "x\n"})
    reply = await get(api, "grep", 400, query="x" * 4097)
    assert reply == {"detail": "Pattern too long: at most 4096 characters"}
    # Within the length but past RE2's memory budget.
    reply = await get(api, "grep", 400, query="((\\w{100}){100}){100}")
    assert reply["detail"].startswith("Unsupported regex: ")


def test_a_pattern_no_utf8_text_can_hold_is_a_400() -> None:
    for literal in (False, True):
        with pytest.raises(ApiError) as refused:
            patterns.user_regex("\udcff", literal=literal, case_insensitive=False)
        assert (refused.value.status, refused.value.detail) == (400, "Invalid pattern: not valid Unicode")
    with pytest.raises(ApiError) as refused:
        patterns.glob_matcher(["*", "\udcff*"])
    assert (refused.value.status, refused.value.detail) == (400, "Invalid pattern: not valid Unicode")


# --- 2. ripgrep never outlives its request -----------------------------------------------------------


async def test_ripgrep_is_killed_and_reaped_when_the_client_disconnects(api: Api, home: Path) -> None:
    if RG is None:
        pytest.skip("ripgrep is not installed")
    slow_text(home / "tree" / "big.txt")
    request = asyncio.ensure_future(api.json("GET", "/files/grep", params={"query": SLOW_FOR_RG, "path": "tree"}))
    pid = (await eventually(lambda: rg_children(os.getpid(), str(home / "tree"))))[0]
    # Stopped, ripgrep would run for ever: only the daemon's kill can end it now.
    os.kill(pid, signal.SIGSTOP)
    request.cancel()
    started = time.monotonic()
    await eventually(lambda: gone(pid))
    print(f"rg killed and reaped {1000 * (time.monotonic() - started):.0f} ms after the disconnect")
    assert await api.json("GET", "/health") == {"status": "ok"}


async def test_a_search_past_its_deadline_kills_ripgrep_and_answers_what_it_found(
        api_with: ApiFactory, home: Path) -> None:
    if RG is None:
        pytest.skip("ripgrep is not installed")
    slow_text(home / "tree" / "big.txt")
    write(home, {"tree/a.txt": "é 1\n"})
    # Long enough to see ripgrep start (then it is stopped), short enough to wait for.
    api = await api_with(search_timeout=3.0)
    request = asyncio.ensure_future(api.json("GET", "/files/grep", params={"query": r"\w\s\d|" + SLOW_FOR_RG,
                                                                          "path": "tree"}))
    pid = (await eventually(lambda: rg_children(os.getpid(), str(home / "tree"))))[0]
    os.kill(pid, signal.SIGSTOP)
    reply = await asyncio.wait_for(request, DEADLINE)
    assert reply["truncated"] is True
    assert gone(pid)


@pytest.mark.usefixtures("engine")
async def test_every_search_has_a_deadline(api_with: ApiFactory, home: Path) -> None:
    write(home, {"d/a.txt": "needle\n"})
    api = await api_with(search_timeout=0)
    assert await get(api, "grep", query="needle", path="d") == {
        "query": "needle", "path": str(home / "d"), "matches": [], "truncated": True}
    assert await get(api, "glob", pattern="*", path="d") == {
        "pattern": "*", "path": str(home / "d"), "matches": [], "truncated": True}
    for endpoint in ("search", "matches"):
        reply = await get(api, endpoint, 504, query="needle", path="d")
        assert reply == {"detail": "Search did not finish within 0 s (OPEN_TERMINAL_SEARCH_TIMEOUT); "
                                   "narrow the path or the query"}


def test_ripgrep_dies_with_the_daemon(daemon_process: tuple[int, str, dict[str, str]], tmp_path: Path) -> None:
    if RG is None:
        pytest.skip("ripgrep is not installed")
    daemon, url, headers = daemon_process
    tree = tmp_path / "dest" / "tree"
    slow_text(tree / "big.txt")
    query = urllib.parse.urlencode({"query": SLOW_FOR_RG, "path": str(tree)})

    def search() -> None:
        with contextlib.suppress(OSError):  # the daemon is killed under it
            urllib.request.urlopen(urllib.request.Request(f"{url}/files/grep?{query}", headers=headers), timeout=60)

    client = threading.Thread(target=search, daemon=True)
    client.start()
    assert wait_until(lambda: bool(rg_children(daemon, str(tree))), timeout=DEADLINE)
    pid = rg_children(daemon, str(tree))[0]
    os.kill(pid, signal.SIGSTOP)
    os.kill(daemon, signal.SIGKILL)
    # PR_SET_PDEATHSIG: the kernel kills ripgrep with its parent (stopped or not).
    assert wait_until(lambda: gone(pid) or process_stats().get(pid, ["Z"])[0] == "Z", timeout=DEADLINE)
    client.join(DEADLINE)


# --- 3. never into /proc, /sys, /dev -----------------------------------------------------------------


@pytest.fixture
def procfs_inside(home: Path) -> Iterator[Path]:
    """A real procfs mounted at home/tree/kernel, beside an ordinary file naming `status`."""
    write(home, {"tree/status.txt": "status: fine\n"})
    mount = home / "tree" / "kernel"
    mount.mkdir()
    subprocess.run([MOUNT, "-t", "proc", "proc", str(mount)], check=True)
    yield mount
    subprocess.run([UMOUNT, "-l", str(mount)], check=True)


def test_pseudo_mounts_are_read_from_mountinfo(procfs_inside: Path) -> None:
    found = mounts.pseudo_mounts()
    assert {"/proc", "/sys", "/dev", str(procfs_inside)} <= set(found)
    excluded = mounts.Excluded("/", found)
    assert excluded.skips("/proc") and excluded.skips("/sys") and not excluded.skips("/home")
    assert mounts.Excluded("/proc/self", found).everything and not excluded.everything


@needs_host_view("searches the host's /proc, which the sandbox's view does not show")
@pytest.mark.usefixtures("engine")
async def test_searches_never_walk_into_a_procfs(api: Api, home: Path, procfs_inside: Path) -> None:
    tree = home / "tree"
    grepped = await health_and(api, "grep", query="^(Name|status):", path="tree")
    assert [m["file"] for m in grepped["matches"]] == [str(tree / "status.txt")]
    globbed = await health_and(api, "glob", pattern="*status*", path="tree")
    assert [m["path"] for m in globbed["matches"]] == ["status.txt"]
    named = await health_and(api, "search", query="status", path="tree")
    assert [r["name"] for r in named["results"]] == ["status.txt"]
    matched = await health_and(api, "matches", query="status", path="tree")
    assert [r["relative_path"] for r in matched["results"]] == ["status.txt"]
    # Named as the search path, a pseudo file system is empty.
    assert (await health_and(api, "grep", query="Name", path="tree/kernel/self"))["matches"] == []
    assert (await health_and(api, "glob", pattern="*", path="tree/kernel"))["matches"] == []
    assert (await health_and(api, "matches", query="status", path="/proc/self"))["results"] == []


# --- 4. only regular files are read ------------------------------------------------------------------


@pytest.mark.usefixtures("engine")
async def test_fifos_and_devices_in_a_searched_folder_are_skipped(api: Api, home: Path) -> None:
    write(home, {"d/a.txt": "needle\n"})
    os.mkfifo(home / "d" / "pipe")
    os.mknod(home / "d" / "zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))  # /dev/zero: reads never end
    (home / "d" / "pipe-link").symlink_to(home / "d" / "pipe")
    grepped = await health_and(api, "grep", query="needle", path="d")
    assert [m["file"] for m in grepped["matches"]] == [str(home / "d" / "a.txt")]
    matched = await health_and(api, "matches", query="needle", path="d")
    assert [r["name"] for r in matched["results"]] == ["a.txt"]
    named = await health_and(api, "search", query="e", path="d")
    assert sorted(r["name"] for r in named["results"]) == ["pipe", "pipe-link", "zero"]
    # Named directly, a FIFO or device is not read either.
    for name in ("pipe", "zero", "pipe-link"):
        assert (await health_and(api, "grep", query="x", path=f"d/{name}"))["matches"] == []
