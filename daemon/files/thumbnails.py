"""Small previews of images for the browse page's grid, made by Pillow in a worker process.

Image decoders fed with untrusted files are where memory bugs and bombs live: a 100-byte PNG can
claim 100,000 x 100,000 pixels. So Pillow never runs in the server. A worker (`opentermd __thumbnail`,
see `daemon.files.worker`) reads the file the server opened and checked (`/dev/fd/N`), refuses more
than `MAX_PIXELS` (Pillow's own decompression-bomb check, made an error at our cap), decodes under
a memory and time limit, and writes a WebP of at most `SIZE` x `SIZE` to stdout.

Thumbnails are kept in `<state>/thumbnails`, one file per version of an image (`preview.cache_key`:
device, inode, ctime and ETag), written atomically; the oldest go when the folder passes
`CACHE_BYTES`. Pillow is imported in the worker only.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import IO

import orjson

from daemon.errors import ApiError
from daemon.files import ops, worker
from daemon.files.preview import cache_key

#: Longest side of a thumbnail, in pixels (the grid shows them at up to 160 CSS pixels, 2x for HiDPI).
SIZE = 320
#: Larger files are not decoded: a photo is a few MB; 50 MB is already a poster-size TIFF.
MAX_INPUT_BYTES = 50 * 1024 * 1024
#: 64 megapixels (a 9000 x 7000 camera image passes); a bomb claiming more is refused before decoding.
MAX_PIXELS = 64_000_000
#: A 64 MP RGBA image decodes to 256 MB; Pillow's draft mode shrinks JPEGs while decoding.
WORKER_MEMORY = 1024 * 1024 * 1024
TIMEOUT = 15.0
CACHE_BYTES = 64 * 1024 * 1024
#: Suffixes worth a thumbnail (what Pillow reads without extra plugins); others answer 415.
SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".ico")
#: The formats the worker accepts once the file's own bytes are read (a .png that is a PSD is refused).
FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "ICO")
MEDIA_TYPE = "image/webp"

NOT_AN_IMAGE = "Not an image a thumbnail can be made of"
BROKEN = "Cannot make a thumbnail of this image"


def wanted(name: str) -> bool:
    return name.lower().endswith(SUFFIXES)


class ThumbnailCache:
    """`<state>/thumbnails/<key>.webp`; plain files, so two daemons on one state directory agree."""

    def __init__(self, directory: Path, max_bytes: int = CACHE_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes

    def get(self, key: str) -> bytes | None:
        try:
            return (self.directory / f"{key}.webp").read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def put(self, key: str, data: bytes) -> None:
        """Written whole or not at all (a reader never sees half a thumbnail), then the cache trimmed."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(temporary, self.directory / f"{key}.webp")
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        self.trim()

    def trim(self) -> None:
        """The oldest thumbnails go until the folder fits `max_bytes` (a thumbnail is a few KB)."""
        with os.scandir(self.directory) as scan:
            files = [(entry.stat().st_mtime_ns, entry.stat().st_size, entry.path)
                     for entry in scan if entry.name.endswith(".webp")]
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                return
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            total -= size


async def thumbnail(file: ops.OpenFile, name: str, cache: ThumbnailCache) -> bytes:
    """The WebP thumbnail of an opened, checked regular file: 415 if it is no image, 422 if it is
    broken or a bomb, 413 past `MAX_INPUT_BYTES`."""
    if not wanted(name):
        raise ApiError(415, NOT_AN_IMAGE)
    if file.info.st_size > MAX_INPUT_BYTES:
        raise ApiError(413, f"Image larger than {MAX_INPUT_BYTES // 2**20} MiB: no thumbnail is made")
    import asyncio  # here: the worker, which imports this module too, never needs it

    key = cache_key(file.info)
    cached = await asyncio.to_thread(cache.get, key)
    if cached is not None:
        return cached
    data = await _run_worker(file.fd)
    await asyncio.to_thread(cache.put, key, data)
    return data


async def _run_worker(fd: int) -> bytes:
    late = ApiError(422, f"{BROKEN}: decoding took longer than {TIMEOUT:g} s")
    code, output, errors = await worker.run(worker.THUMBNAIL, [f"/dev/fd/{fd}"], timeout=TIMEOUT,
                                            on_timeout=late, fds=(fd,))
    if code == worker.REFUSED:
        refusal = orjson.loads(errors)
        raise ApiError(int(refusal["status"]), str(refusal["detail"]))
    if code != 0 or not output:  # killed (the memory limit) or crashed: the image is what failed
        raise ApiError(422, BROKEN)
    return output


# --- in the worker ------------------------------------------------------------------------------


def worker_main(args: list[str]) -> int:
    """Runs in the worker: the thumbnail of the file at args[0] on stdout, or a refusal on stderr."""
    worker.limit_memory(WORKER_MEMORY)
    try:
        with open(args[0], "rb") as source:
            sys.stdout.buffer.write(make(source))
    except ApiError as exc:
        sys.stderr.buffer.write(orjson.dumps({"status": exc.status, "detail": exc.detail}))
        return worker.REFUSED
    except MemoryError:
        sys.stderr.buffer.write(orjson.dumps({"status": 422, "detail": f"{BROKEN}: it needs too much memory"}))
        return worker.REFUSED
    return 0


def make(source: IO[bytes]) -> bytes:
    """A WebP of at most SIZE x SIZE from an image file: 415 for what is no image, 422 for bombs and damage."""
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    # Pillow warns between MAX_IMAGE_PIXELS and twice that, and raises only past twice: the warning
    # is made an error, so our cap is the cap.
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    try:
        with Image.open(source, formats=FORMATS) as image:
            image.draft("RGB", (SIZE, SIZE))  # JPEG: decode at 1/2..1/8 scale, far less memory and time
            image.thumbnail((SIZE, SIZE))
            shown = ImageOps.exif_transpose(image)  # phone photos stand the way they were taken
            if shown.mode not in ("RGB", "RGBA"):
                shown = shown.convert("RGBA" if "transparency" in shown.info or "A" in shown.mode else "RGB")
            out = io.BytesIO()
            shown.save(out, "WEBP", quality=75, method=4)
            return out.getvalue()
    except UnidentifiedImageError:
        raise ApiError(415, NOT_AN_IMAGE) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(422, f"{BROKEN}: it claims more than {MAX_PIXELS // 1_000_000} megapixels") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or damaged data
        raise ApiError(422, f"{BROKEN}: {exc}") from None
