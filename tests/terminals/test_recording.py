"""Asciinema v2 recordings on real files: format, UTF-8 across reads, flushing, retention, a full disk."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asciinema import asciicast  # type: ignore[import-untyped]

from daemon.terminals import recording
from daemon.terminals.recording import Recorder, sweep_recordings
from tests.conftest import FakeClock

ENV = {"SHELL": "/bin/bash", "TERM": "xterm-256color", "API_KEY": "never in a header"}
Event = tuple[float, str, str]


def parse_cast(path: Path) -> tuple[dict[str, Any], list[Event]]:
    """A strict asciicast v2 reader: what asciinema's player requires, and nothing looser."""
    raw = path.read_bytes()
    assert raw.endswith(b"\n"), "every line, the last too, ends with a newline"
    lines = raw.decode("utf-8").split("\n")[:-1]  # strict UTF-8; not splitlines(), U+2028 is text
    header = json.loads(lines[0])
    assert isinstance(header, dict)
    assert header["version"] == 2
    for field in ("width", "height", "timestamp"):
        assert type(header[field]) is int, field
    assert header["width"] > 0 and header["height"] > 0
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in header["env"].items())
    events: list[Event] = []
    for line in lines[1:]:
        event = json.loads(line)
        assert isinstance(event, list) and len(event) == 3, line
        at, kind, text = event
        assert type(at) in (int, float) and at >= 0, line
        assert kind in ("o", "i", "r", "m") and isinstance(text, str), line
        assert kind != "r" or re.fullmatch(r"\d+x\d+", text), line
        assert not events or at >= events[-1][0], "times never go backwards"
        events.append((at, kind, text))
    return header, events


def texts(events: list[Event], kind: str = "o") -> list[str]:
    return [text for _, k, text in events if k == kind]


def record(path: Path, *chunks: bytes) -> list[Event]:
    recorder = Recorder(path, 80, 24, command="/bin/bash", env=ENV)
    for chunk in chunks:
        recorder.output(chunk)
    recorder.close()
    return parse_cast(path)[1]


def test_the_header_is_written_at_once_with_asciinema_fields_in_order(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    recorder = Recorder(path, 120, 40, command="/bin/bash -l", env=ENV, started=1_700_000_000.75)
    header, events = parse_cast(path)
    assert list(header) == ["version", "width", "height", "timestamp", "command", "env"]
    assert header == {
        "version": 2, "width": 120, "height": 40, "timestamp": 1_700_000_000, "command": "/bin/bash -l",
        "env": {"SHELL": "/bin/bash", "TERM": "xterm-256color"},
    }
    assert events == []
    recorder.close()


def test_the_header_keeps_only_the_env_that_is_set_and_mends_undecodable_text(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    Recorder(path, 80, 24, command="vi caf\udce9", env={"TERM": "dumb"}).close()
    header, _ = parse_cast(path)
    assert header["env"] == {"TERM": "dumb"}
    assert header["command"] == "vi caf\ufffd"


def test_events_are_json_arrays_in_time_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock, path, recorder = clocked_recorder(tmp_path, monkeypatch)
    shown = [b"$ ", b'\x1b[31mred\x1b[0m "quoted" back\\slash\r\n', "\x00\x07\t\u2028".encode()]
    recorder.output(shown[0])
    recorder.input(b"ls\r")
    recorder.output(shown[1])
    clock.now += 0.002
    recorder.output(shown[2])
    recorder.close()
    _, events = parse_cast(path)
    assert [kind for _, kind, _ in events] == ["o", "i", "o", "o"]
    assert texts(events) == [chunk.decode() for chunk in shown]
    assert texts(events, "i") == ["ls\r"]
    assert events[-1][0] > events[0][0]
    assert all(at == round(at, 6) for at, _, _ in events)


def test_a_character_split_between_reads_arrives_whole(tmp_path: Path) -> None:
    e_acute, emoji = "é".encode(), "😀".encode()
    assert len(e_acute) == 2 and len(emoji) == 4
    events = record(tmp_path / "s.cast", b"caf" + e_acute[:1], e_acute[1:], emoji[:1], emoji[1:], b"!")
    assert texts(events) == ["caf", "é", "😀", "!"]


def test_input_has_its_own_decoder(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    recorder = Recorder(path, 80, 24, command="/bin/bash", env=ENV)
    recorder.input("ü".encode()[:1])
    recorder.output("é".encode()[:1])
    recorder.input("ü".encode()[1:])
    recorder.output("é".encode()[1:])
    recorder.close()
    _, events = parse_cast(path)
    assert [(kind, text) for _, kind, text in events] == [("i", "ü"), ("o", "é")]


def test_invalid_bytes_become_replacement_characters(tmp_path: Path) -> None:
    events = record(tmp_path / "s.cast", b"a\xffb", b"\xc3(", b"\xed\xa0\x80", b"end\xe2\x82")
    # The last read ends inside a character that never completes: it shows at close.
    assert "".join(texts(events)) == "a\ufffdb\ufffd(\ufffd\ufffd\ufffdend\ufffd"


def test_resize_events_name_columns_then_rows(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    recorder = Recorder(path, 80, 24, command="/bin/bash", env=ENV)
    recorder.resize(100, 30)
    recorder.output(b"x")
    recorder.resize(80, 24)
    recorder.close()
    _, events = parse_cast(path)
    assert [(kind, text) for _, kind, text in events] == [("r", "100x30"), ("o", "x"), ("r", "80x24")]


def test_close_is_idempotent_frees_the_file_and_ignores_later_events(tmp_path: Path) -> None:
    fds_before = len(os.listdir("/proc/self/fd"))
    path = tmp_path / "s.cast"
    recorder = Recorder(path, 80, 24, command="/bin/bash", env=ENV)
    recorder.output(b"hello")
    assert recorder.active
    recorder.close()
    recorder.close()
    assert not recorder.active
    assert len(os.listdir("/proc/self/fd")) == fds_before
    content = path.read_bytes()
    recorder.output(b"late")
    recorder.input(b"late")
    recorder.resize(1, 1)
    recorder.close()
    assert path.read_bytes() == content
    assert texts(parse_cast(path)[1]) == ["hello"]


def test_the_file_is_private_in_a_directory_made_on_demand(tmp_path: Path) -> None:
    path = tmp_path / "state" / "recordings" / "s.cast"
    Recorder(path, 80, 24, command="/bin/bash", env=ENV).close()
    assert os.stat(path).st_mode & 0o777 == 0o600
    # A file left under the same name is emptied and made private too.
    path.write_text("old secrets\n")
    path.chmod(0o644)
    Recorder(path, 80, 24, command="/bin/bash", env=ENV).close()
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert b"old secrets" not in path.read_bytes()


def test_small_writes_wait_in_memory_until_close(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    recorder = Recorder(path, 80, 24, command="/bin/bash", env=ENV)
    header_size = path.stat().st_size
    for _ in range(100):
        recorder.output(b"0123456789")
    assert path.stat().st_size == header_size
    recorder.close()
    assert "".join(texts(parse_cast(path)[1])) == "0123456789" * 100


def test_past_64_kib_the_buffer_reaches_the_disk_before_close(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    recorder = Recorder(path, 80, 24, command="/bin/bash", env=ENV)
    recorder.output(b"x" * (70 * 1024))
    assert "".join(texts(parse_cast(path)[1])) == "x" * (70 * 1024)
    for _ in range(17):  # many small writes add up the same way: at most the last one still waits
        recorder.output(b"y" * 4096)
    assert "".join(texts(parse_cast(path)[1])).count("y") >= 16 * 4096
    recorder.close()
    assert "".join(texts(parse_cast(path)[1])).count("y") == 17 * 4096


def clocked_recorder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FakeClock, Path, Recorder]:
    """A recorder whose clock the test moves by hand."""
    clock = FakeClock(5000.0)
    monkeypatch.setattr(recording, "monotonic", clock)
    path = tmp_path / "s.cast"
    return clock, path, Recorder(path, 80, 24, command="/bin/bash", env=ENV)


def test_event_times_are_seconds_since_the_start_to_the_microsecond(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock, path, recorder = clocked_recorder(tmp_path, monkeypatch)
    recorder.output(b"a")
    clock.now += 0.1234567
    recorder.output(b"b")
    clock.now += 61
    recorder.resize(90, 30)
    recorder.close()
    assert parse_cast(path)[1] == [(0.0, "o", "a"), (0.123457, "o", "b"), (61.123457, "r", "90x30")]


def test_a_quiet_buffer_reaches_the_disk_on_the_first_event_after_half_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock, path, recorder = clocked_recorder(tmp_path, monkeypatch)
    clock.now += 0.49
    recorder.output(b"first")
    assert texts(parse_cast(path)[1]) == []
    clock.now += 0.01
    recorder.output(b"second")
    assert texts(parse_cast(path)[1]) == ["first", "second"]
    clock.now += 0.3
    recorder.output(b"third")
    clock.now += 0.3
    recorder.resize(90, 30)
    assert [text for _, _, text in parse_cast(path)[1]] == ["first", "second", "third", "90x30"]
    recorder.close()


def test_sweep_deletes_only_recordings_older_than_the_retention(tmp_path: Path) -> None:
    directory = tmp_path / "recordings"
    directory.mkdir()
    now = time.time()

    def make(name: str, days_old: float) -> None:
        if not os.path.lexists(directory / name):
            (directory / name).write_text("x")
        at = now - days_old * 86400
        os.utime(directory / name, (at, at), follow_symlinks=False)

    for name, days_old in {"old.cast": 8, "edge.cast": 7.01, "fresh.cast": 6.99, "new.cast": 0,
                           "old.txt": 30, "old.cast.tmp": 30, "live.cast": 30}.items():
        make(name, days_old)
    (directory / "dir.cast").mkdir()
    (directory / "link.cast").symlink_to(directory / "new.cast")
    make("dir.cast", 30)
    make("link.cast", 30)

    live = [directory / "live.cast"]
    assert sweep_recordings(directory, 7, now=now, keep=live) == 2
    assert sorted(p.name for p in directory.iterdir()) == [
        "dir.cast", "fresh.cast", "link.cast", "live.cast", "new.cast", "old.cast.tmp", "old.txt",
    ]
    assert sweep_recordings(directory, 7, now=now, keep=live) == 0
    assert sweep_recordings(directory, 0, now=now) == 0, "no retention keeps everything"
    assert sweep_recordings(tmp_path / "missing", 7) == 0
    assert sweep_recordings(directory, 7) == 1, "the real clock by default; live.cast is no longer kept"
    assert sweep_recordings(directory, 6.98, now=now + 3600) == 1  # fresh.cast, an hour later


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB filesystem, so the kernel itself answers ENOSPC."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_a_full_disk_stops_the_recording_not_the_caller(full_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = full_disk / "s.cast"
    recorder = Recorder(path, 80, 24, command="/bin/bash", env=ENV)
    lines = [f"line {n:06d} ".encode() + b"z" * 100 + b"\r\n" for n in range(2000)]  # ~230 KB
    with caplog.at_level(logging.WARNING, logger="daemon.terminals.recording"):
        for line in lines:
            recorder.output(line)
        assert not recorder.active
        recorder.resize(100, 30)
        recorder.close()
        recorder.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "No space left" in warnings[0].getMessage()
    # What did reach the disk is whole lines: it still plays, up to where the disk filled.
    _, events = parse_cast(path)
    recorded = texts(events)
    assert 0 < len(recorded) < len(lines)
    assert recorded == [line.decode() for line in lines[: len(recorded)]]


def test_asciinema_itself_reads_and_plays_the_recording(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    recorder = Recorder(path, 80, 24, command="/bin/bash", env=ENV)
    recorder.output("café ".encode()[:4])
    recorder.output("café ".encode()[4:] + "😀\r\n".encode())
    recorder.input(b"exit\r")
    recorder.resize(100, 30)
    recorder.output(b"\x1b[1mbye\x1b[0m\r\n")
    recorder.close()
    header, events = parse_cast(path)

    with asciicast.open_from_url(str(path)) as cast:
        assert cast.version == 2
        assert cast.v2_header == header
        assert [tuple(event) for event in cast.events()] == events

    played = subprocess.run(
        [sys.executable, "-m", "asciinema", "play", "--idle-time-limit", "0.01", str(path)],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=60, start_new_session=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"}, check=False,
    )
    assert played.returncode == 0, played.stderr
    assert played.stdout.decode() == "café 😀\r\n\x1b[1mbye\x1b[0m\r\n"


def test_a_disk_already_full_refuses_the_recording_at_once(full_disk: Path) -> None:
    filler = os.open(full_disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError, match="No space left"):
            while True:
                os.write(filler, b"f" * 4096)
    finally:
        os.close(filler)
    with pytest.raises(OSError, match="No space left"):
        Recorder(full_disk / "s.cast", 80, 24, command="/bin/bash", env=ENV)
    assert not (full_disk / "s.cast").exists()
