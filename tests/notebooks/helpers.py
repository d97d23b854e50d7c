"""Notebooks and kernelspecs written for the tests, with the libraries the daemon reads them with."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import nbformat

from tests.conftest import Api


def write_notebook(path: Path, *sources: str, kernel: str | None = None, markdown: str | None = None) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    if markdown is not None:
        notebook.cells.append(nbformat.v4.new_markdown_cell(markdown))
    if kernel is not None:
        notebook.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    path.write_text(nbformat.writes(notebook))
    return path


def install_kernelspec(home: Path, name: str, argv: list[str]) -> None:
    """A kernelspec in the user's folder (jupyter reads ~/.local/share/jupyter/kernels)."""
    folder = home / ".local/share/jupyter/kernels" / name
    folder.mkdir(parents=True)
    (folder / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": name, "language": "python"}))


def tiny_png() -> bytes:
    """A valid 1x1 red PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
            + chunk(b"IEND", b""))


PNG_B64 = base64.b64encode(tiny_png()).decode()
SHOW_IMAGE = ("from IPython.display import Image, display\nimport base64\n"
              f"display(Image(data=base64.b64decode('{PNG_B64}')))")


async def open_notebook(api: Api, path: str | Path, **kwargs: Any) -> str:
    reply = await api.json("POST", "/notebooks", json={"path": str(path)}, **kwargs)
    assert reply["status"] == "ready"
    session_id: str = reply["id"]
    return session_id


async def run_cell(api: Api, session_id: str, index: int, source: str | None = None, **kwargs: Any) -> Any:
    body: dict[str, Any] = {"cell_index": index}
    if source is not None:
        body["source"] = source
    return await api.json("POST", f"/notebooks/{session_id}/execute", json=body, **kwargs)


def plain(reply: Any) -> str:
    """The text/plain of a cell's execute_result."""
    text: str = next(o for o in reply["outputs"] if o["output_type"] == "execute_result")["data"]["text/plain"]
    return text
