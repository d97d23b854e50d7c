"""Thin declarations for `/files/...`."""

from __future__ import annotations

import os

from pydantic import BaseModel, Field

from daemon.errors import not_found
from daemon.files.cwd import browser_root
from daemon.files.paths import resolve
from daemon.http.endpoints import Call, Endpoint, NoInput
from daemon.keys import CONFIG, DIRECTORIES


class MkdirRequest(BaseModel):
    path: str = Field(..., description="Directory path to create. Parent directories are created automatically.")


async def get_cwd(call: Call[NoInput, NoInput]) -> dict[str, object]:
    directories = call.app[DIRECTORIES]
    reply: dict[str, object] = {"cwd": directories.get(call.owner.session_id), "home": directories.home}
    root = browser_root(call.app[CONFIG].file_browser_root, directories.home)
    if root:
        reply["root"] = root
    return reply


async def set_cwd(call: Call[NoInput, MkdirRequest]) -> dict[str, str]:
    directories = call.app[DIRECTORIES]
    target = resolve(call.body.path, directories.home)
    if not os.path.isdir(target):
        raise not_found("Directory not found")
    directories.set(call.owner.session_id, target)
    return {"cwd": target}


ENDPOINTS = [
    Endpoint("GET", "/files/cwd", get_cwd, in_schema=False),
    Endpoint("POST", "/files/cwd", set_cwd, body=MkdirRequest, in_schema=False),
]
