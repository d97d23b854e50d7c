"""A disk that refuses a process log's writes: a real full tmpfs, and a real RLIMIT_FSIZE.

Output is never silently lost: what cannot be written is kept in memory and served, what is dropped
sets `truncated`, and once the disk takes writes again the log marks where and how much is missing.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.processes.output_log import OUTAGE_BYTES, LogWriter, OutputLog
from tests.conftest import ApiFactory, eventually, output_text

BEFORE = 100_000  # printed before the disk refuses: all kept
AFTER = 3_000_000  # printed once it has refused, far past OUTAGE_BYTES: some of it must be dropped


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (room for what memory keeps once it is freed), unmounted after the server closed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(disk)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs: {mounted.stderr.strip()}"
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk: Path) -> Path:
    """Write a file until the disk says ENOSPC; deleting it gives the space back."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    with pytest.raises(OSError, match="No space left"):
        (disk / "probe").write_bytes(b"x")
    return filler


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def ends_with_end_record(path: Path) -> bool:
    return path.exists() and path.read_text().endswith("\n") and records(path)[-1]["type"] == "end"


def refused(caplog: pytest.LogCaptureFixture, log_path: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records
            if record.levelno == logging.WARNING and log_path in record.getMessage()]


async def test_a_full_disk_drops_output_visibly_and_marks_the_gap_when_space_returns(
        api_with: ApiFactory, small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    (small_disk / "processes").mkdir()
    filler = fill(small_disk)
    api = await api_with(log_dir=small_disk)

    # The second burst waits for stdin, so it starts only once the disk has refused a write (and the
    # memory the log may keep during the outage, not a backlog from before it, bounds what is kept).
    chatty = await api.run(f"head -c {BEFORE} /dev/zero | tr '\\0' x; read go; "
                           f"head -c {AFTER} /dev/zero | tr '\\0' x; exit 3", wait=0)
    await eventually(lambda: refused(caplog, chatty["log_path"]))
    await api.json("POST", f"/execute/{chatty['id']}/input", json={"input": "go\n"})
    status = await api.json("GET", f"/execute/{chatty['id']}/status?offset=0&wait=60")
    assert (status["status"], status["exit_code"]) == ("done", 3), "the command runs on and ends"
    assert status["truncated"] is True
    served = output_text(status).replace("go\r\n", "")  # the PTY echoes the input
    assert served == "x" * len(served) and BEFORE < len(served) < BEFORE + OUTAGE_BYTES, "served from memory"
    assert set(status) == {"id", "command", "status", "exit_code", "log_path", "output", "next_offset",
                           "truncated"}, "the contract's shape, no new field"

    # The daemon keeps serving on the full disk; a quiet command loses nothing.
    assert await api.json("GET", "/health") == {"status": "ok"}
    quiet = await api.run("echo still here")
    assert output_text(quiet).strip() == "still here" and quiet["truncated"] is False
    log_path = Path(chatty["log_path"])
    assert not log_path.exists() or "gap" not in log_path.read_text()

    filler.unlink()  # space returns: the next retry writes what memory kept, then marks the gap
    await eventually(lambda: ends_with_end_record(log_path))
    lines = records(log_path)
    kinds = [line["type"] for line in lines]
    kept = len(status["output"])
    assert kinds == ["start", *["output"] * kept, "gap", "end"]
    gap = lines[-2]
    written = "".join(line["data"] for line in lines[1:-2]).replace("go\r\n", "")
    assert written == served
    assert gap["offset"] == kept and gap["bytes"] == BEFORE + AFTER - len(written), "where and how much"
    assert (lines[-1]["exit_code"], lines[-1]["truncated"]) == (3, True)
    await eventually(lambda: ends_with_end_record(Path(quiet["log_path"])))
    assert "gap" not in Path(quiet["log_path"]).read_text()

    after = await api.run("echo after")
    assert output_text(after).strip() == "after" and after["truncated"] is False
    await eventually(lambda: ends_with_end_record(Path(after["log_path"])))

    # A daemon started later reads the same log and sees the gap too.
    restarted = await api_with(log_dir=small_disk)
    past = await restarted.json("GET", f"/execute/{chatty['id']}/status?offset=0")
    assert (past["status"], past["exit_code"], past["truncated"]) == ("done", 3, True)
    assert past["next_offset"] == kept and output_text(past).replace("go\r\n", "") == served
    assert len(refused(caplog, chatty["log_path"])) == 1, "one warning per log, however many retries"


async def test_a_file_size_limit_refuses_writes_and_the_gap_is_marked_when_it_lifts(tmp_path: Path) -> None:
    """EFBIG past RLIMIT_FSIZE (this process's own limit, lifted again at the end of the test)."""
    path = tmp_path / "p.jsonl"
    log = OutputLog(path, cap=1 << 30, writer=LogWriter(0.001, retry_interval=0.005))
    limit = 64 * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        log.record(type="start", command="yes")
        chunk = "y" * 8000 + "\r\n"
        for _ in range(10):
            log.append(chunk)
        await log.drain()  # refused past the limit: from here on memory keeps what the file does not take
        assert path.stat().st_size == limit, "what fits landed, exactly"
        while not log.truncated:
            assert log.count < 1000
            log.append(chunk)
        kept = log.count
        log.append(chunk)
        assert [e["data"] for e in json.loads(b"[" + await log.render(0, kept) + b"]")] == [chunk] * kept
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    await eventually(lambda: b'"type": "gap"' in path.read_bytes())
    log.append("after\r\n")
    log.record(type="end", exit_code=0)
    await log.close()

    lines = records(path)
    assert [line["type"] for line in lines] == ["start", *["output"] * kept, "gap", "output", "end"]
    assert lines[kept + 1] | {"ts": 0} == {"type": "gap", "offset": kept, "bytes": 2 * len(chunk), "ts": 0}
    rebuilt = OutputLog.from_file(path, writer=LogWriter(0.001), truncated=False)
    assert rebuilt.truncated is True and rebuilt.count == kept + 1
    assert json.loads(b"[" + await rebuilt.render(kept, kept + 1) + b"]") == [{"type": "output", "data": "after\r\n"}]
