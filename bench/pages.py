"""The web file manager's figures (opentermd only: the reference has no pages).

* **browse TTFB**: ``GET /browse/<folder>`` of a 10,000-entry folder with a page session, time from
  the request to the response headers (aiohttp returns when the status line and headers are read);
  p50 after warm-ups, target <= 150 ms. Each reply must be a 200 page that names the folder's entries.
* **browse usable**: the same page in headless Chromium (Debian's, driven by Playwright when it is
  installed): navigation start to the end of the load event, when every script of the page has run and
  bound its handlers; the median of a few loads. Reported.
* **thumbnail**: ``GET /files/thumbnail?path=`` of distinct 1600x1200 JPEGs (each a cache miss), per
  image p50. Reported.
* **scripts**: the ``<script src>`` files the editor's file page and the terminal page load, as served,
  their total size and gzip size (level 6, what a compressing proxy would send). Reported.

Run alone with ``.venv/bin/python bench/pages.py [--smoke]``.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import importlib.util
import io
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bench.harness import REQUEST_TIMEOUT, BenchError, Report, Sample, Server, measure_workload, run_alone

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TTFB_LIMIT_MS = 150.0
SCRIPT_SRC = re.compile(r'<script[^>]*\bsrc="([^"]+)"')


@dataclass(frozen=True)
class Sizes:
    entries: int
    warmup: int
    runs: int
    loads: int
    images: int


FULL = Sizes(entries=10_000, warmup=3, runs=30, loads=5, images=10)
SMOKE = Sizes(entries=200, warmup=1, runs=3, loads=1, images=2)


def big_folder(server: Server, entries: int) -> Path:
    """`entries` files (a tenth of them folders), made once per server."""
    folder = server.home / f"pages-{entries}"
    if not folder.is_dir():
        folder.mkdir()
        for index in range(entries):
            name = folder / f"entry-{index:05d}"
            if index % 10 == 0:
                name.mkdir()
            else:
                name.with_suffix(".txt").write_bytes(b"x" * (index % 97))
    return folder


async def page_session(server: Server) -> aiohttp.ClientSession:
    """A client logged in through the login form, as a browser is: it holds the session cookie."""
    # unsafe=True: aiohttp's jar otherwise drops every cookie of an IP address such as 127.0.0.1.
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
                                    cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with session.post(f"{server.base_url}/login", data={"key": server.key}, allow_redirects=False) as reply:
        if reply.status != 303 or not len(session.cookie_jar):
            await session.close()
            raise BenchError(f"POST /login answered {reply.status} without a session cookie")
    return session


def browse_url(server: Server, path: Path) -> str:
    return f"{server.base_url}/browse{quote(str(path))}"


async def browse_ttfb(server: Server, sizes: Sizes, report: Report) -> list[float]:
    folder = big_folder(server, sizes.entries)
    url = browse_url(server, folder)
    session = await page_session(server)
    try:
        samples = []
        for index in range(sizes.warmup + sizes.runs):
            started = time.perf_counter()
            async with session.get(url) as reply:
                first_byte = time.perf_counter() - started
                body = await reply.text()
            if reply.status != 200 or 'data-name="entry-00000"' not in body:  # folders come first
                report.wrong_answer(f"GET /browse of {sizes.entries} entries: {reply.status}, {body[:200]!r}")
            if index >= sizes.warmup:
                samples.append(first_byte * 1000)
        return samples
    finally:
        await session.close()


def ttfb_samples(server: Server, report: Report, sizes: Sizes) -> list[Sample]:
    samples = asyncio.run(browse_ttfb(server, sizes, report))
    return [Sample(f"browse {sizes.entries:,}-entry folder: time to first byte p50 ({sizes.runs}x)",
                   statistics.median(samples), "ms", "lower", limit=TTFB_LIMIT_MS, digits=1)]


# --- in the browser -----------------------------------------------------------------------------------


def browser_missing() -> str | None:
    """Why the browser figure cannot be taken here, or None."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (make debian-packages)"
    try:
        import playwright  # noqa: F401  (the test extra installs it)
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


async def browse_usable(server: Server, sizes: Sizes, report: Report) -> list[float]:
    from playwright.async_api import async_playwright

    url = browse_url(server, big_folder(server, sizes.entries))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 900})
            await page.goto(f"{server.base_url}/login")
            await page.fill("#key", server.key)
            async with page.expect_navigation():
                await page.click("button[type=submit]")
            samples = []
            for _ in range(sizes.loads):
                await page.goto(url, wait_until="load")
                rows = await page.locator("tr[data-testid=entry]").count()
                if rows == 0:
                    report.wrong_answer("the browse page in Chromium showed no rows")
                timing: float = await page.evaluate(
                    "performance.getEntriesByType('navigation')[0].loadEventEnd")
                samples.append(timing)
            return samples
        finally:
            await browser.close()


def usable_samples(server: Server, report: Report, sizes: Sizes) -> list[Sample]:
    samples = asyncio.run(browse_usable(server, sizes, report))
    return [Sample(f"browse {sizes.entries:,}-entry folder: usable in Chromium (load event, median of "
                   f"{sizes.loads})", statistics.median(samples), "ms", digits=0)]


# --- thumbnails ---------------------------------------------------------------------------------------


def photos(server: Server, count: int) -> list[Path]:
    """Distinct 1600x1200 JPEGs (gradients and noise, so they compress like photos), new each round:
    every request is a cache miss."""
    from PIL import Image

    folder = server.home / "pages-photos"
    folder.mkdir(exist_ok=True)
    made = []
    for _ in range(count):
        noise = Image.effect_noise((1600, 1200), 40).convert("RGB")
        gradient = Image.linear_gradient("L").resize((1600, 1200)).convert("RGB")
        path = folder / f"photo-{time.monotonic_ns()}.jpg"
        buffer = io.BytesIO()
        Image.blend(noise, gradient, 0.5).save(buffer, "JPEG", quality=85)
        path.write_bytes(buffer.getvalue())
        made.append(path)
    return made


async def thumbnail_times(server: Server, sizes: Sizes, report: Report) -> list[float]:
    images = photos(server, sizes.images)
    session = await page_session(server)
    try:
        samples = []
        for path in images:
            started = time.perf_counter()
            async with session.get(f"{server.base_url}/files/thumbnail", params={"path": str(path)}) as reply:
                body = await reply.read()
            elapsed = (time.perf_counter() - started) * 1000
            if reply.status == 404 and b"Not Found" in body:
                raise BenchError("GET /files/thumbnail is not there (engineer C's daemon/files/thumbnails.py)")
            if reply.status != 200 or not body.startswith(b"RIFF"):
                report.wrong_answer(f"GET /files/thumbnail answered {reply.status}: {body[:120]!r}")
            samples.append(elapsed)
        return samples
    finally:
        await session.close()


def thumbnail_samples(server: Server, report: Report, sizes: Sizes) -> list[Sample]:
    samples = asyncio.run(thumbnail_times(server, sizes, report))
    return [Sample(f"thumbnail of a 1600x1200 JPEG, per image p50 ({sizes.images}x)", statistics.median(samples),
                   "ms", digits=0)]


# --- script sizes -------------------------------------------------------------------------------------


async def page_scripts(session: aiohttp.ClientSession, server: Server, url: str) -> tuple[int, int, int]:
    """(files, bytes, gzip bytes) of the scripts the page at `url` loads, as served."""
    async with session.get(url) as reply:
        html = await reply.text()
        if reply.status != 200:
            raise BenchError(f"GET {url} answered {reply.status}")
    sources = SCRIPT_SRC.findall(html)
    raw = zipped = 0
    for source in sources:
        async with session.get(f"{server.base_url}{source}") as reply:
            body = await reply.read()
            if reply.status != 200:
                raise BenchError(f"GET {source} answered {reply.status}")
        raw += len(body)
        zipped += len(gzip.compress(body, compresslevel=6))
    return len(sources), raw, zipped


async def script_sizes(server: Server) -> list[Sample]:
    text = server.home / "pages-notes.txt"
    text.write_text("hello\n")
    session = await page_session(server)
    samples = []
    try:
        for name, url in (("editor (file page)", browse_url(server, text)),
                          ("terminal page", f"{server.base_url}/terminal")):
            count, raw, zipped = await page_scripts(session, server, url)
            samples += [Sample(f"{name} scripts ({count} files)", raw / 1024, "KiB", digits=0),
                        Sample(f"{name} scripts gzip", zipped / 1024, "KiB", digits=0)]
        return samples
    finally:
        await session.close()


def script_samples(server: Server, report: Report, sizes: Sizes) -> list[Sample]:
    return asyncio.run(script_sizes(server))


SizedMeasure = Callable[[Server, Report, Sizes], list[Sample]]


def _sized(server: Server, report: Report, *, workload: SizedMeasure, sizes: Sizes) -> list[Sample]:
    return workload(server, report, sizes)


def run(servers: list[Server], smoke: bool, report: Report) -> None:
    """Each page workload on opentermd alone (the last server): the reference has no pages."""
    sizes = SMOKE if smoke else FULL
    ours = servers[-1:]
    if len(servers) > 1 and servers[0].name == "reference":
        report.notes.append("pages: opentermd only, the reference has no web pages")
    workloads: list[tuple[str, SizedMeasure]] = [("browse TTFB", ttfb_samples)]
    if (missing := browser_missing()) is None:
        workloads.append(("browse usable in Chromium", usable_samples))
    else:
        report.notes.append(f"browse usable in Chromium: n/a, {missing}")
    if importlib.util.find_spec("daemon.files.thumbnails") is not None:
        workloads.append(("thumbnails", thumbnail_samples))
    else:
        report.notes.append("thumbnail per image: n/a, daemon/files/thumbnails.py is not in this tree yet")
    workloads.append(("page scripts", script_samples))
    for name, workload in workloads:
        measure_workload(ours, name, functools.partial(_sized, workload=workload, sizes=sizes), report)


def main(argv: list[str]) -> int:
    """These workloads alone, on opentermd (twice with --smoke: the second is measured)."""
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    return run_alone(run, argv, "pages")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

