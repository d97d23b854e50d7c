"""Where the API key came from, in words: the banners of `opentermd run` and `opentermd mcp`,
and `opentermd key --rotate` when it refuses, all say it the same way.

A configured key is never printed (it is already written down somewhere the user chose); a
stored or generated one is, since the banner is where the user first learns it.
"""

from __future__ import annotations

from daemon.config import Config

#: The configured sources, as the user would name them.
KEY_SOURCES = {
    "flag": "--api-key flag",
    "environment": "OPEN_TERMINAL_API_KEY environment variable",
    "file": "OPEN_TERMINAL_API_KEY_FILE file",
    "config file": "config file",
    "unstored": "state directory, which refused it: this run only",
}


def source_name(source: str) -> str:
    return KEY_SOURCES.get(source, "configuration")


def describe_key(settings: Config) -> str:
    """The key (when it was not configured) and where it came from, for a banner."""
    source = settings.api_key_source
    if source == "stored" and settings.in_container:
        # A container's log is kept and shipped (`docker logs`): the key is in it once, when it was made.
        return f"(stored in {settings.stored_key_path}; `opentermd key` in the container prints it)"
    if source == "stored":
        return f"{settings.api_key}  (stored in {settings.stored_key_path})"
    if source == "generated":
        return f"{settings.api_key}  (generated, stored in {settings.stored_key_path})"
    if source == "unstored":
        return f"{settings.api_key}  (generated; the state directory refused it: this run only)"
    return f"(from the {source_name(source)})"
