"""Service endpoints: health, feature discovery, the system prompt, operator info."""

from __future__ import annotations

import os
import platform
import re
import socket
import sys

from daemon import users
from daemon.config import Config
from daemon.git.runner import git_available
from daemon.http.endpoints import Access, Call, Endpoint
from daemon.http.inputs import NoInput
from daemon.keys import CONFIG


def system_facts() -> dict[str, str]:
    return {
        "os": platform.system(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "hostname": socket.gethostname(),
        "user": os.environ.get("USER", "unknown"),
        "shell": os.environ.get("SHELL", "/bin/sh"),
        "python_version": sys.version.split()[0],
        "home": os.path.expanduser("~"),
        **users.identity(),  # multi-user: the request's user's account, which their commands run as
    }


def system_prompt(config: Config) -> str:
    facts = system_facts()
    if config.system_prompt:
        return re.sub(
            r"\{\{\s*([a-zA-Z0-9_]+)\s*\}\}",
            lambda match: facts.get(match.group(1).strip(), match.group(0)),
            config.system_prompt,
        )
    prompt = (
        f"You have access to a computer running {facts['os']} {facts['kernel']} ({facts['arch']}) "
        f"on host \"{facts['hostname']}\" as user '{facts['user']}' with {facts['shell']}. "
        f"Python {facts['python_version']} is available.\n\n"
        "Use your tools to directly interact with the system \u2014 run commands, read and write files, "
        "and search the filesystem. "
        "Prefer verifying the current state before making changes. "
        "When running commands, check the output to confirm success. "
        "If a command produces no output, that typically means it succeeded."
    )
    return prompt + (f"\n\n{config.info}" if config.info else "")


async def health(call: Call[NoInput, NoInput]) -> dict[str, str]:
    return {"status": "ok"}


async def features(call: Call[NoInput, NoInput]) -> dict[str, dict[str, bool]]:
    config = call.app[CONFIG]
    # What this daemon really serves: Open WebUI hides the shell pane when `terminal` is false and the
    # notebook Run buttons when `notebooks` is.
    return {"features": {"terminal": config.enable_terminal, "notebooks": config.enable_notebooks,
                         "system": config.enable_system_prompt, "git": git_available()}}


async def get_system(call: Call[NoInput, NoInput]) -> dict[str, str]:
    return {"prompt": system_prompt(call.app[CONFIG])}


async def get_info(call: Call[NoInput, NoInput]) -> dict[str, str]:
    return {"info": call.app[CONFIG].info}


def endpoints(config: Config) -> list[Endpoint]:
    """`/system` and `/info` exist only when enabled, as in the reference."""
    declared = [
        Endpoint("GET", "/health", health, access=Access.PUBLIC, in_schema=False),
        Endpoint("GET", "/api/config", features, access=Access.PUBLIC, in_schema=False),
    ]
    if config.enable_system_prompt:
        declared.append(Endpoint("GET", "/system", get_system, in_schema=False))
    if config.info:
        declared.append(Endpoint(
            "GET", "/info", get_info, "get_info", "Get environment info",
            "Return operator-provided information about this environment. Use this to understand the system "
            "you are working with.",
        ))
    return declared
