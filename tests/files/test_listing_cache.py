"""Big listings from memory: exact after every kind of change, with real files and real inotify."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.files.listing_cache import ListingCache
from daemon.files.ops import list_directory
from tests.conftest import Api

ENTRIES = 300


@pytest.fixture
def cache() -> Iterator[ListingCache]:
    made = ListingCache()
    yield made
    made.close()


def big_directory(path: Path, count: int = ENTRIES) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        (path / f"f{index:04d}.txt").write_text("x" * index)
    return path


def warmed(path: Path, cache: ListingCache) -> None:
    """The first read arms the watch, the second is kept, the third comes from memory."""
    for _ in range(3):
        assert list_directory(str(path), cache=cache) == list_directory(str(path))
    assert cache.hits == 1


def test_an_unchanged_big_directory_comes_from_memory(tmp_path: Path, cache: ListingCache) -> None:
    directory = big_directory(tmp_path / "big")
    warmed(directory, cache)
    for _ in range(5):
        assert list_directory(str(directory), cache=cache) == list_directory(str(directory))
    assert cache.hits == 6 and cache.watched == 1


def test_small_directories_are_read_every_time(tmp_path: Path, cache: ListingCache) -> None:
    directory = big_directory(tmp_path / "small", count=cache.min_entries - 1)
    for _ in range(4):
        list_directory(str(directory), cache=cache)
    assert cache.hits == 0


def rename_out(directory: Path) -> None:
    (directory / "f0001.txt").rename(directory.parent / "moved-out.txt")


def rename_in(directory: Path) -> None:
    (directory.parent / "outsider.txt").write_text("in")
    (directory.parent / "outsider.txt").rename(directory / "arrived.txt")


def append(directory: Path) -> None:
    with (directory / "f0003.txt").open("a") as file:
        file.write("more")


def replace_atomically(directory: Path) -> None:
    (directory.parent / "tmp.txt").write_text("zz")
    os.replace(directory.parent / "tmp.txt", directory / "f0008.txt")


CHANGES: dict[str, Callable[[Path], object]] = {
    "create": lambda d: (d / "new.txt").write_text("new"),
    "delete": lambda d: (d / "f0002.txt").unlink(),
    "append": append,
    "truncate": lambda d: os.truncate(d / "f0004.txt", 0),
    "touch mtime": lambda d: os.utime(d / "f0005.txt", (1_000_000, 1_000_000)),
    "mkdir": lambda d: (d / "sub").mkdir(),
    "rename within": lambda d: (d / "f0007.txt").rename(d / "renamed.txt"),
    "rename out": rename_out,
    "rename in": rename_in,
    "replace atomically": replace_atomically,
}


@pytest.mark.parametrize("change", CHANGES)
def test_every_change_is_seen_at_once(tmp_path: Path, cache: ListingCache, change: str) -> None:
    directory = big_directory(tmp_path / "big")
    warmed(directory, cache)
    before = list_directory(str(directory), cache=cache)
    CHANGES[change](directory)
    after = list_directory(str(directory), cache=cache)
    assert after == list_directory(str(directory)), "no sleep, no stale answer"
    assert after != before


def test_subdirectories_and_symlinks_are_described_afresh(tmp_path: Path, cache: ListingCache) -> None:
    directory = big_directory(tmp_path / "big")
    (directory / "sub").mkdir()
    outside = tmp_path / "target.txt"
    outside.write_text("short")
    (directory / "link").symlink_to(outside)
    warmed(directory, cache)
    before = {entry["name"]: entry for entry in list_directory(str(directory))["entries"]}
    # Neither reaches the directory's watch: a write inside a subdirectory, a write at a link's target.
    (directory / "sub" / "deep.txt").write_text("moves the subdirectory's mtime")
    outside.write_text("a much longer text than before")
    listed = {entry["name"]: entry for entry in list_directory(str(directory), cache=cache)["entries"]}
    assert cache.hits == 2, "served from memory, yet exact"
    assert listed == {entry["name"]: entry for entry in list_directory(str(directory))["entries"]}
    assert listed["sub"]["modified"] != before["sub"]["modified"]
    assert listed["link"]["size"] == len("a much longer text than before")
    outside.unlink()
    assert "link" not in [entry["name"] for entry in list_directory(str(directory), cache=cache)["entries"]]


def test_a_directory_replaced_under_the_same_path_is_read_anew(tmp_path: Path, cache: ListingCache) -> None:
    directory = big_directory(tmp_path / "big")
    warmed(directory, cache)
    shutil.rmtree(directory)
    big_directory(directory, count=ENTRIES + 5)
    assert len(list_directory(str(directory), cache=cache)["entries"]) == ENTRIES + 5


def test_lost_events_forget_everything(tmp_path: Path, cache: ListingCache) -> None:
    quiet = big_directory(tmp_path / "quiet")
    noisy = big_directory(tmp_path / "noisy")
    warmed(quiet, cache)
    for _ in range(2):
        list_directory(str(noisy), cache=cache)
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    first, second = os.open(noisy / "f0000.txt", os.O_WRONLY), os.open(noisy / "f0001.txt", os.O_WRONLY)
    try:
        for _ in range(limit // 2 + 100):  # bounded: just past the kernel's queue, which then overflows
            os.write(first, b"x")  # two files in turn: the kernel merges only identical neighbours
            os.write(second, b"x")
    finally:
        os.close(first)
        os.close(second)
    (quiet / "unseen.txt").write_text("its event was dropped with the overflow")
    assert list_directory(str(quiet), cache=cache) == list_directory(str(quiet))
    assert cache.overflows == 1


def test_max_age_bounds_what_inotify_cannot_see(tmp_path: Path) -> None:
    directory = big_directory(tmp_path / "big")
    cache = ListingCache(max_age=0.0)
    try:
        for _ in range(4):
            list_directory(str(directory), cache=cache)
        assert cache.hits == 0
    finally:
        cache.close()


def test_the_least_recently_used_directory_is_unwatched(tmp_path: Path) -> None:
    cache = ListingCache(max_directories=2)
    try:
        folders = [big_directory(tmp_path / name) for name in ("a", "b", "c")]
        for folder in folders:
            for _ in range(2):
                list_directory(str(folder), cache=cache)
        assert cache.watched == 2
        list_directory(str(folders[0]), cache=cache)
        assert cache.hits == 0, "a was evicted: it is read again (and watched again)"
    finally:
        cache.close()


def test_the_root_filter_applies_to_remembered_listings(tmp_path: Path, cache: ListingCache) -> None:
    directory = big_directory(tmp_path / "big")
    warmed(directory, cache)
    shown = list_directory(str(directory), lambda path: path.endswith("7.txt"), cache)
    assert cache.hits == 2 and {entry["name"][-5:] for entry in shown["entries"]} == {"7.txt"}


async def test_the_api_lists_a_commands_changes_at_once(api: Api, scratch_environment: Path) -> None:
    directory = big_directory(scratch_environment / "big")
    for _ in range(3):
        listed = await api.json("GET", f"/files/list?directory={directory}")
    assert len(listed["entries"]) == ENTRIES
    await api.run(f"echo hello > {directory}/from-shell.txt && rm {directory}/f0000.txt")
    names = {entry["name"]: entry for entry in (await api.json("GET", f"/files/list?directory={directory}"))["entries"]}
    assert names["from-shell.txt"]["size"] == 6 and "f0000.txt" not in names
