"""GET /files/thumbnail over a real server: real images made by Pillow, a real bomb, real special files."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import Any

from PIL import Image

from tests.conftest import Api


def png(width: int, height: int, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 100-byte PNG whose header claims 10 gigapixels (a 30 GB decode)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + data


async def get(api: Api, path: Path, **headers: str) -> tuple[int, bytes, Any]:
    async with api.request("GET", "/files/thumbnail", params={"path": str(path)}, headers=headers) as response:
        return response.status, await response.read(), response.headers


async def test_a_photo_gets_a_small_webp_cached_by_version(api: Api, home: Path, tmp_path: Path) -> None:
    photo = home / "photo.jpg"
    Image.new("RGB", (2000, 1000), (10, 120, 200)).save(photo, "JPEG")
    status, body, headers = await get(api, photo)
    assert status == 200 and headers["Content-Type"] == "image/webp"
    with Image.open(io.BytesIO(body)) as thumb:
        assert thumb.format == "WEBP" and thumb.size == (320, 160)
    cached = list((tmp_path / "state" / "thumbnails").glob("*.webp"))
    assert len(cached) == 1 and cached[0].read_bytes() == body
    # Unchanged: the browser's copy is good.
    assert (await get(api, photo, **{"If-None-Match": headers["ETag"]}))[0] == 304
    # A new version is a new thumbnail (another key), not the cached one.
    Image.new("RGB", (100, 400), (0, 0, 0)).save(photo, "JPEG")
    os.utime(photo, ns=(1, 1_000_000_000))
    status, body, _ = await get(api, photo)
    with Image.open(io.BytesIO(body)) as thumb:
        assert thumb.size == (80, 320)
    assert len(list((tmp_path / "state" / "thumbnails").glob("*.webp"))) == 2


async def test_decompression_bomb_is_422_and_the_server_keeps_serving(api: Api, home: Path) -> None:
    bomb = home / "bomb.png"
    bomb.write_bytes(bomb_png())
    status, body, _ = await get(api, bomb)
    assert status == 422, body
    assert b"megapixels" in body
    fine = home / "fine.png"
    fine.write_bytes(png(64, 64))
    assert (await get(api, fine))[0] == 200


async def test_broken_and_disguised_images_are_refused(api: Api, home: Path) -> None:
    (home / "cut.png").write_bytes(png(500, 500)[:200])
    (home / "text.png").write_bytes(b"hello, not an image\n")
    (home / "notes.txt").write_text("plain text")
    assert (await get(api, home / "cut.png"))[0] == 422
    assert (await get(api, home / "text.png"))[0] == 415
    assert (await get(api, home / "notes.txt"))[0] == 415


async def test_only_regular_files_inside_the_root(api_with: object, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "dir.png").mkdir()
    os.mkfifo(home / "pipe.png")
    outside = tmp_path / "outside.png"
    outside.write_bytes(png(8, 8))
    (home / "link.png").symlink_to(outside)
    api = await api_with(file_root=home)  # type: ignore[operator]
    assert (await get(api, home / "dir.png"))[0] == 400
    assert (await get(api, home / "pipe.png"))[0] == 400
    assert (await get(api, outside))[0] in (403, 404)
    assert (await get(api, home / "link.png"))[0] in (403, 404)
    assert (await get(api, home / "missing.png"))[0] == 404


async def test_needs_the_key(api: Api, home: Path) -> None:
    (home / "a.png").write_bytes(png(8, 8))
    async with api.request("GET", "/files/thumbnail", params={"path": str(home / "a.png")}, auth=False) as response:
        assert response.status == 401


def test_the_cache_stays_within_its_bound_oldest_out(tmp_path: Path) -> None:
    from daemon.files.thumbnails import ThumbnailCache

    cache = ThumbnailCache(tmp_path / "thumbs", max_bytes=3000)
    for n in range(5):
        cache.put(f"k{n}", bytes(1000))
        os.utime(tmp_path / "thumbs" / f"k{n}.webp", ns=(n * 10**9, n * 10**9))  # k0 oldest
    cache.trim()
    assert sorted(path.name for path in (tmp_path / "thumbs").iterdir()) == ["k2.webp", "k3.webp", "k4.webp"]
    assert cache.get("k4") == bytes(1000) and cache.get("k0") is None
