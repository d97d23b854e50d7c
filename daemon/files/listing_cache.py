"""Big directory listings kept between requests, dropped the moment inotify reports a change.

Listing 10,000 entries costs 10,000 stat calls (about 25 ms on the bench machine); an unchanged
directory listed again is answered from memory. The rules that keep the answer exact:

- A listing is kept only if an inotify watch on the directory was in place before it was read and
  reported nothing while it was read. The first listing of a big directory arms a watch, the
  second is kept, the ones after are served from memory.
- Pending events are read before every lookup. The kernel queues an event inside the system call
  that makes the change, so a change made before a request was sent is always seen.
- A watch on a directory reports its entries being created, deleted, renamed, written or changing
  attributes, but not what happens inside a subdirectory (which moves that entry's mtime) nor at a
  symlink's target: those entries are stat'ed again on every use.
- What inotify cannot see at all (a write through a hard link in another directory or a shared
  mmap, another machine on NFS, a remount) is bounded by `max_age`.

Without inotify (no kernel support, the watch limit reached) nothing is kept: every listing is read.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from inotify_simple import INotify, flags

Entry = dict[str, Any]
#: (st_dev, st_ino) of the directory: a listing follows the directory, not its path.
Key = tuple[int, int]
#: A fresh read: the entries, and the indexes of those to stat again on every use.
Scan = tuple[list[Entry], list[int]]

CHANGES = (flags.CREATE | flags.DELETE | flags.MOVED_FROM | flags.MOVED_TO | flags.MODIFY | flags.ATTRIB
           | flags.CLOSE_WRITE | flags.DELETE_SELF | flags.MOVE_SELF | flags.ONLYDIR)


@dataclass
class Listing:
    entries: list[Entry]
    volatile: list[int]
    #: What else the entries depend on (a read-only mount makes nothing writable).
    context: Hashable
    read_at: float


@dataclass
class Watch:
    wd: int
    #: Bumped by every event: a read that saw it change cannot be kept.
    generation: int = 0
    listing: Listing | None = None


class ListingCache:
    def __init__(self, *, min_entries: int = 256, max_directories: int = 16, max_entries: int = 200_000,
                 max_age: float = 2.0) -> None:
        self.min_entries = min_entries
        self.max_directories = max_directories
        self.max_entries = max_entries
        self.max_age = max_age
        #: Listings answered from memory, and times the kernel's event queue overflowed.
        self.hits = 0
        self.overflows = 0
        self._lock = threading.Lock()
        self._inotify: INotify | None = None
        self._unavailable = False
        self._watches: OrderedDict[Key, Watch] = OrderedDict()
        self._keys: dict[int, Key] = {}
        self._kept_entries = 0

    def entries(self, directory: str, key: Key, context: Hashable, scan: Callable[[], Scan],
                restat: Callable[[str], Entry | None]) -> list[Entry]:
        """The directory's entries, from memory when nothing changed, else from `scan()`.

        `directory` names it for the watch (a `/proc/self/fd/N` path is best: no race with a
        rename); `restat(name)` describes one entry afresh, or None if it is gone.
        """
        kept, generation = self._lookup(key, context)
        if kept is not None:
            return _refreshed(kept, restat)
        started = time.monotonic()
        entries, volatile = scan()
        if len(entries) >= self.min_entries:
            self._keep(directory, key, generation, Listing(entries, volatile, context, started))
        return entries

    def close(self) -> None:
        with self._lock:
            if self._inotify is not None:
                self._inotify.close()
            self._inotify = None
            self._unavailable = True
            self._watches.clear()
            self._keys.clear()
            self._kept_entries = 0

    @property
    def watched(self) -> int:
        return len(self._watches)

    # --- under the lock ---------------------------------------------------------------------------

    def _lookup(self, key: Key, context: Hashable) -> tuple[Listing | None, int | None]:
        with self._lock:
            self._drain()
            watch = self._watches.get(key)
            if watch is None:
                return None, None
            self._watches.move_to_end(key)
            listing = watch.listing
            if listing is not None and listing.context == context \
                    and time.monotonic() - listing.read_at < self.max_age:
                self.hits += 1
                return listing, None
            return None, watch.generation

    def _keep(self, directory: str, key: Key, generation: int | None, listing: Listing) -> None:
        with self._lock:
            self._drain()
            watch = self._watches.get(key)
            if watch is None:
                self._arm(directory, key)  # this read had no watch: the next one may be kept
            elif generation is not None and watch.generation == generation:
                self._drop_listing(watch)
                watch.listing = listing
                self._kept_entries += len(listing.entries)
                self._evict()

    def _arm(self, directory: str, key: Key) -> None:
        if self._unavailable:
            return
        try:
            if self._inotify is None:
                self._inotify = INotify(nonblocking=True)
            wd = self._inotify.add_watch(directory, CHANGES)
        except OSError:
            self._unavailable = self._inotify is None  # no inotify at all; a full watch table may free up
            return
        self._watches[key] = Watch(wd)
        self._keys[wd] = key
        self._evict()

    def _drain(self) -> None:
        if self._inotify is None:
            return
        try:
            events = self._inotify.read(timeout=0)
        except OSError:
            events = []
            self._forget_all_listings()
        for event in events:
            if event.mask & flags.Q_OVERFLOW:
                self.overflows += 1
                self._forget_all_listings()  # events were lost: nothing kept can be trusted
                continue
            key = self._keys.get(event.wd)
            if key is None:
                continue
            if event.mask & flags.IGNORED:  # the directory is gone (or unmounted)
                self._remove(key, unwatch=False)
                continue
            watch = self._watches[key]
            watch.generation += 1
            self._drop_listing(watch)

    def _forget_all_listings(self) -> None:
        for watch in self._watches.values():
            watch.generation += 1
            self._drop_listing(watch)

    def _drop_listing(self, watch: Watch) -> None:
        if watch.listing is not None:
            self._kept_entries -= len(watch.listing.entries)
            watch.listing = None

    def _evict(self) -> None:
        while self._watches and (len(self._watches) > self.max_directories or self._kept_entries > self.max_entries):
            self._remove(next(iter(self._watches)), unwatch=True)

    def _remove(self, key: Key, *, unwatch: bool) -> None:
        watch = self._watches.pop(key)
        self._keys.pop(watch.wd, None)
        self._drop_listing(watch)
        if unwatch and self._inotify is not None:
            with contextlib.suppress(OSError):
                self._inotify.rm_watch(watch.wd)


def _refreshed(listing: Listing, restat: Callable[[str], Entry | None]) -> list[Entry]:
    """A copy of the kept entries with directories and symlinks described afresh."""
    entries = list(listing.entries)
    gone = set()
    for index in listing.volatile:
        fresh = restat(entries[index]["name"])
        if fresh is None:
            gone.add(index)
        else:
            entries[index] = fresh
    return [entry for index, entry in enumerate(entries) if index not in gone] if gone else entries
