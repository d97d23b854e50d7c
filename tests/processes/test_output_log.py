"""The JSONL output log on real files: index reads, backpressure, and a disk that refuses writes."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import warnings
from pathlib import Path

import pytest

from daemon.keys import PROCESSES
from daemon.processes import output_log
from daemon.processes.output_log import LogWriter, OutputLog
from tests.conftest import ApiFactory, eventually, output_text


def entries(raw: bytes) -> list[dict[str, str]]:
    parsed: list[dict[str, str]] = json.loads(b"[" + raw + b"]")
    return parsed


async def test_reads_older_than_memory_come_from_disk_exactly(tmp_path: Path) -> None:
    log = OutputLog(tmp_path / "p.jsonl", cap=1 << 30, writer=LogWriter(0.01))
    chunks = [f"chunk {n:05d} " + "x" * 4000 + "\r\n" for n in range(600)]  # ~2.4 MB, past RECENT_BYTES
    for chunk in chunks:
        log.append(chunk)
    await log.drain()
    assert log.count == 600
    assert [e["data"] for e in entries(await log.render(0, 600))] == chunks
    assert [e["data"] for e in entries(await log.render(10, 12))] == chunks[10:12]
    window = log.window(595, tail=2)
    assert (window.first, window.last, window.truncated) == (598, 600, True)
    on_disk = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["data"] for r in on_disk] == chunks
    await log.close()


async def test_a_writer_that_falls_behind_asks_the_producer_to_pause(tmp_path: Path) -> None:
    log = OutputLog(tmp_path / "p.jsonl", cap=1 << 30, writer=LogWriter(10))
    drained: list[bool] = []
    log.on_drained = lambda: drained.append(True)
    block = "y" * 65536
    while not log.backlogged:
        assert log.count < 1000, "16 MB unwritten must count as a backlog"
        log.append(block)
    await log.drain()
    assert drained and not log.backlogged
    assert (tmp_path / "p.jsonl").stat().st_size > output_log.BACKLOG_BYTES
    await log.close()


async def test_a_full_disk_keeps_output_in_memory_then_drops_and_flags_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    writer = LogWriter(0.001, retry_interval=0.001)
    log = OutputLog(Path("/dev/full"), cap=1 << 30, writer=writer)  # every write: ENOSPC
    log.append("kept\r\n")
    await log.drain()
    log.append("kept in memory too\r\n")
    assert log.truncated is False, "nothing is lost yet: memory holds it until the disk takes it"
    block = "z" * 65536
    while not log.truncated:
        assert log.count < 100, "output past OUTAGE_BYTES unwritten is dropped"
        log.append(block)
    kept = log.count
    log.append("dropped too\r\n")
    assert log.count == kept and log.dropped_bytes == 65536 + len("dropped too\r\n")
    assert not log.backlogged, "a failing disk never pauses the command"
    hops = writer.hops
    await eventually(lambda: writer.hops >= hops + 5)  # it keeps trying, on its retry timer
    served = [e["data"] for e in entries(await log.render(0, log.count))]
    assert served[:2] == ["kept\r\n", "kept in memory too\r\n"] and len(served) == kept
    refusals = [r for r in caplog.records if r.levelno == logging.WARNING and "/dev/full" in r.getMessage()]
    assert len(refusals) == 1, "once per log, not once per write"
    # Each retry opens the file in its worker thread and lets go once the loop hears of the refusal,
    # so at any one moment a retry may hold it: between retries nothing does.
    await eventually(lambda: not log.holds_file)
    await log.close()
    assert not log.holds_file, "closed: no retry opens it again"


async def test_logs_due_together_are_written_in_one_hop(tmp_path: Path) -> None:
    writer = LogWriter(flush_interval=0.01)
    logs = [OutputLog(tmp_path / f"{index}.jsonl", cap=1 << 30, writer=writer) for index in range(50)]
    for index, log in enumerate(logs):
        log.record(type="start", command=f"echo {index}")
        log.append(f"{index}\r\n")
    await asyncio.gather(*(log.drain() for log in logs))
    assert writer.hops == 1, "fifty logs, one worker-thread hop"
    for index in range(50):
        lines = [json.loads(line) for line in (tmp_path / f"{index}.jsonl").read_text().splitlines()]
        assert [line["type"] for line in lines] == ["start", "output"] and lines[1]["data"] == f"{index}\r\n"
    for log in logs:
        log.append("later\r\n")
    await asyncio.gather(*(log.close() for log in logs))
    assert writer.hops == 2, "closed together: one more hop"
    for index in range(50):
        last = json.loads((tmp_path / f"{index}.jsonl").read_text().splitlines()[-1])
        assert last["data"] == "later\r\n"


async def test_the_shared_timer_flushes_every_due_log(tmp_path: Path) -> None:
    writer = LogWriter(flush_interval=0.01)
    logs = [OutputLog(tmp_path / f"{index}.jsonl", cap=1 << 30, writer=writer) for index in range(5)]
    for log in logs:
        log.append("on the timer\r\n")

    def written() -> bool:
        paths = [tmp_path / f"{index}.jsonl" for index in range(5)]
        return all(path.exists() and "on the timer" in path.read_text() for path in paths)

    await eventually(written)  # with no drain or flush asked for
    assert writer.hops == 1
    for log in logs:
        await log.close()


async def test_a_sealed_log_lets_go_of_its_file_and_reads_old_output_from_disk(tmp_path: Path) -> None:
    log = OutputLog(tmp_path / "p.jsonl", cap=1 << 30, writer=LogWriter(0.001))
    chunks = [f"chunk {n:05d} " + "x" * 4000 + "\r\n" for n in range(600)]  # past what memory keeps
    for chunk in chunks:
        log.append(chunk)
    await eventually(lambda: log.holds_file)
    log.record(type="end", exit_code=0)
    log.seal()
    await eventually(lambda: not log.holds_file)
    assert [e["data"] for e in entries(await log.render(0, 600))] == chunks
    assert not log.holds_file, "a read opens the file for itself"
    last = json.loads((tmp_path / "p.jsonl").read_text().splitlines()[-1])
    assert last["type"] == "end"
    await log.close()


async def test_a_log_rebuilt_from_its_file_reads_like_the_original(tmp_path: Path) -> None:
    writer = LogWriter(0.001)
    original = OutputLog(tmp_path / "p.jsonl", cap=1 << 30, writer=writer)
    original.record(type="start", command="echo")
    for index in range(50):
        original.append(f"line {index} with \"quotes\", a ,\"ts\": and ünïcode\r\n")
    original.record(type="end", exit_code=0)
    await original.close()
    _append_bytes(tmp_path / "p.jsonl", b'{"type":"output","data":"cut short by a')  # the daemon died mid-write
    rebuilt = OutputLog.from_file(tmp_path / "p.jsonl", writer=writer, truncated=False)
    assert rebuilt.count == 50 and not rebuilt.holds_file
    expected = [f"line {index} with \"quotes\", a ,\"ts\": and ünïcode\r\n" for index in range(50)]
    assert [e["data"] for e in entries(await rebuilt.render(0, 50))] == expected
    window = rebuilt.window(45, tail=2)
    assert (window.first, window.last, window.truncated) == (48, 50, True)
    assert [e["data"] for e in entries(await rebuilt.render(48, 50))] == expected[48:]


def _append_bytes(path: Path, data: bytes) -> None:
    with path.open("ab") as file:
        file.write(data)


def test_a_write_dispatched_in_the_loops_last_turn_leaves_no_coroutine_behind() -> None:
    """A hop dispatched as the loop stops used to be a task that never ran: its coroutine, kept by the
    writer, warned "never awaited" whenever the writer was collected, in whatever test ran then."""
    loop = asyncio.new_event_loop()
    destroyed: list[str] = []  # the submitter's own task, pending at the end on purpose
    loop.set_exception_handler(lambda _loop, context: destroyed.append(context["message"]))
    writer = LogWriter(flush_interval=60)

    async def submit(writer: LogWriter) -> None:
        asyncio.get_running_loop().create_task(writer.run(lambda: None))
        await asyncio.sleep(0)  # the write is submitted: its hop is dispatched in the loop's last turn

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loop.run_until_complete(submit(writer))
        loop.close()
        assert writer.hops == 1, "the hop was dispatched before the loop stopped"
        del writer
        gc.collect()
    assert [str(warning.message) for warning in caught] == []


async def test_closing_an_app_with_a_flush_scheduled_writes_it_and_leaves_nothing_behind(
        api_with: ApiFactory) -> None:
    api = await api_with(log_flush_interval=60)  # the flush stays scheduled until the app closes
    reply = await api.run("echo unflushed")
    assert output_text(reply) == "unflushed\r\n"
    writer = api.client.app[PROCESSES]._log_writer
    assert not writer.idle, "the shared timer holds the log's lines"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await api.client.close()
        assert writer.closed and writer.idle, "the timer is cancelled and every write has settled"
        gc.collect()
    assert [str(warning.message) for warning in caught] == []
    lines = [json.loads(line) for line in Path(reply["log_path"]).read_text().splitlines()]
    assert lines[0]["type"] == "start" and lines[-1]["type"] == "end"
    assert "".join(line["data"] for line in lines if line["type"] == "output") == "unflushed\r\n"
