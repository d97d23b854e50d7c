"""Every setting in one place, and how it is resolved.

Resolution order, highest first: command-line flag > environment variable (the reference server's
`OPEN_TERMINAL_*` names, so its users can switch without edits) > user TOML
(`$XDG_CONFIG_HOME/opentermd/config.toml`, or the file given with `--config`) > system TOML
(`/etc/opentermd/config.toml`) > built-in default.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon import stored_key
from daemon.limits import parse_count, parse_mechanism, parse_size

ENV_PREFIX = "OPEN_TERMINAL_"
GIB = 1024**3
SYSTEM_CONFIG = Path("/etc/opentermd/config.toml")


class ConfigError(Exception):
    """A setting that cannot be used; its message is the one line the user sees."""


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _parse_port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {port}")
    return port


def _parse_non_negative(convert: Callable[[str], float]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = convert(text)
        if value < 0:
            raise ValueError(f"must not be negative, got {text}")
        return value

    return parse


def _parse_positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, got {text}")
    return value


def _parse_positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"must be positive, got {text}")
    return value


def _parse_origins(text: str) -> tuple[str, ...]:
    return tuple(origin.strip() for origin in text.split(",") if origin.strip()) or ("*",)


def _parse_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _parse_directory(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise ValueError("not a directory")
    return path.resolve()


def _parse_recording(text: str) -> str:
    value = text.strip().lower()
    if value not in ("off", "enabled", "always"):
        raise ValueError("expected off, enabled or always")
    return value


def _parse_user_prefix(text: str) -> str:
    from daemon.users import check_prefix  # users imports this module

    return check_prefix(text.strip())


def _parse_sandbox(text: str) -> str:
    value = text.strip().lower()
    if value not in ("off", "bwrap"):
        raise ValueError("expected off or bwrap")
    return value


def _parse_optional_float(text: str) -> float | None:
    return float(text) if text.strip() else None


@dataclass(frozen=True)
class Config:
    """The daemon's settings, resolved once at start-up and never changed afterwards."""

    host: str = "127.0.0.1"
    port: int = 8000
    cwd: Path = field(default_factory=Path.cwd)
    api_key: str = ""
    api_key_generated: bool = False
    #: Where the key came from, for the banner: flag, environment, file, config file, stored,
    #: generated (new, and now stored), or unstored (generated, but the state directory refused it).
    api_key_source: str = "flag"
    cors_allowed_origins: tuple[str, ...] = ("*",)
    #: Host names the server answers (DNS-rebinding defence); empty: loopback names when bound to
    #: loopback, any host otherwise. `*` allows any. IP literals and localhost are always allowed.
    allowed_hosts: tuple[str, ...] = ()
    #: Connections open at once (lowered to fit the open-files limit); past it the oldest idle one is closed.
    max_connections: int = 512
    #: Seconds a request line and headers may take to arrive, from their first byte.
    header_timeout: float = 15.0
    #: Seconds an idle keep-alive connection stays open.
    keepalive_timeout: float = 75.0
    state_dir: Path = field(default_factory=lambda: _xdg("XDG_STATE_HOME", ".local/state") / "opentermd")
    log_dir: Path | None = None
    execute_timeout: float | None = None
    execute_description: str = ""
    enable_system_prompt: bool = True
    system_prompt: str = ""
    info: str = ""
    max_log_size: int = GIB
    log_retention: float = 7 * 24 * 3600
    log_flush_interval: float = 0.02
    #: Commands running at once; `POST /execute` past it is a 429 (finished ones do not count).
    max_processes: int = 256
    file_browser_root: str = "home"
    session_cwd_ttl: float = 7 * 24 * 3600
    #: Confine every file endpoint beneath this directory (`--root`); None means the whole disk.
    file_root: Path | None = None
    binary_mime_prefixes: tuple[str, ...] = ("image",)
    max_upload_size: int = 64 * GIB
    upload_url_timeout: float = 300.0
    link_ttl: float = 300.0
    #: Bytes one copy (a file or a whole folder) may write; past it the copy is 413 and removed.
    copy_max_size: int = 64 * GIB
    #: Bytes an archive may extract to (counted as written, not as declared); past it 413.
    extract_max_size: int = GIB
    #: Seconds one copy or extraction may run; then it stops, removes what it made and answers 408.
    file_task_timeout: float = 600.0
    #: Deletes move to the freedesktop.org trash (files/trash.py); off: deleted for good.
    trash: bool = True
    #: Seconds an item stays in the trash (0: no limit); swept at start and hourly.
    trash_max_age: float = 30 * 24 * 3600
    #: Bytes the trash may hold (0: no limit); past it the oldest items are purged first.
    trash_max_size: int = 10 * GIB
    document_timeout: float = 30.0
    #: A search (grep, glob, search, matches) stops after this many seconds; ripgrep is killed.
    search_timeout: float = 60.0
    #: The LibreOffice that renders /files/view?preview=true: empty, soffice from PATH; `off`, none.
    libreoffice: str = ""
    #: Seconds one LibreOffice conversion may take; then its process group is killed and the reply is 422.
    preview_timeout: float = 60.0
    #: Bytes of rendered PDFs kept in <state>/previews/cache (least recently used go first).
    preview_cache_size: int = 256 * 1024 * 1024
    max_sessions: int = 16
    #: Every terminal outlives its WebSocket for this many seconds when set (None: only opted-in ones).
    detach_timeout: float | None = None
    #: How long an opted-in (detachable) terminal waits for a re-attach when no timeout is set.
    detach_grace: float = 600.0
    #: How long a terminal created but never attached keeps its slot.
    attach_grace: float = 30.0
    term: str = "xterm-256color"
    replay_bytes: int = 256 * 1024
    recording: str = "off"
    recording_retention: float = 30.0
    proxy_token_auth: bool = False
    #: Also serve MCP (streamable HTTP) at /mcp on the main server, behind the API key.
    enable_mcp: bool = False
    #: Serve the terminal routes (REST, WebSocket, /terminal page, user-shell tools); off: not registered.
    enable_terminal: bool = True
    #: Serve /notebooks (Jupyter kernels); on by default when jupyter_client and nbformat are importable.
    enable_notebooks: bool = field(default_factory=lambda: _importable("jupyter_client", "nbformat"))
    #: Notebook sessions (each a live kernel) at once; past it POST /notebooks is a 429.
    max_notebooks: int = 8
    #: Seconds one cell may run; then the kernel is interrupted and the cell's reply says so. None: no limit.
    notebook_cell_timeout: float | None = 120.0
    #: Seconds a kernel may take to start and answer; then its process group is killed and the reply is 500.
    notebook_start_timeout: float = 60.0
    #: Measure event-loop stalls into <state>/loop-stall.json (daemon/watchdog.py); off: it costs idle CPU.
    loop_watchdog: bool = False
    #: Keep the bytes every overwrite replaces in <state>/history (daemon/files/history.py); off: none kept.
    history: bool = True
    #: History caps, oldest versions first: per file (count, bytes), in all (bytes), and age in seconds.
    history_max_versions: int = 20
    history_max_file_size: int = 100 * 1024 * 1024
    history_max_size: int = GIB
    history_max_age: float = 30 * 24 * 3600
    #: `bwrap`: commands and terminal shells run inside bubblewrap (daemon/sandbox.py); `off`: as the daemon.
    sandbox: str = "off"
    #: Whether sandboxed children share the host's network (off: a network namespace of their own).
    sandbox_network: bool = True
    #: Limits per command tree and per terminal (daemon/limits.py); None: unlimited.
    limit_processes: int | None = None
    limit_memory: int | None = None
    limit_file_size: int | None = None
    limit_cpu_seconds: int | None = None
    #: Totals per user (all their commands and terminals together); None: unlimited.
    user_limit_processes: int | None = None
    user_limit_memory: int | None = None
    #: auto (cgroup v2, else v1, else rlimits), cgroup2, cgroup1 or rlimit.
    limit_mechanism: str = "auto"
    #: Several users by `X-User-Id` (daemon/users.py): an account (as root) and a home each.
    multi_user: bool = False
    #: Put before every account name made for a user (the reference's OPEN_TERMINAL_USER_PREFIX).
    user_prefix: str = ""
    #: Where the users' homes are made; None: /home as root, <state_dir>/homes otherwise.
    user_homes: Path | None = None
    #: At most this many users' homes (accounts as root) in `user_homes`: a new X-User-Id past it is 429.
    max_users: int = 1000
    #: The file the key was read from (OPEN_TERMINAL_API_KEY_FILE), hidden from sandboxed children.
    api_key_file: Path | None = None
    #: The user config file in use (it may hold the key), hidden from sandboxed children.
    config_file: Path | None = None
    #: Tenants by token (daemon/tenants.py): a TOML file of `[[tenant]]` name + token_sha256; None: no tenants.
    tenants_file: Path | None = None
    #: Set by the container image (Containerfile): binding 0.0.0.0 there is the only way in, so no warning.
    in_container: bool = False

    def __post_init__(self) -> None:
        # A tenant is a user of the multi-user machinery: tenants without it would share one home and uid.
        if self.tenants_file is not None and not self.multi_user:
            object.__setattr__(self, "multi_user", True)
        # A user's kernel runs as their uid, so it needs the daemon's interpreter: the sandbox shows it
        # to them (daemon/sandbox.py); without one, notebooks stay off unless every uid can reach it.
        if self.multi_user and self.enable_notebooks and self.sandbox == "off" and not _interpreter_shared():
            object.__setattr__(self, "enable_notebooks", False)
            logging.getLogger(__name__).warning(
                "multi-user without --sandbox bwrap: notebooks are off, as the users' uids cannot reach the "
                "daemon's Python (%s)", sys.base_prefix)

    @property
    def home(self) -> str:
        """Relative paths resolve here; it is also the server's working directory."""
        return str(self.cwd)

    @property
    def process_log_dir(self) -> Path:
        return (self.log_dir or self.state_dir / "logs") / "processes"

    @property
    def recording_dir(self) -> Path:
        return self.state_dir / "recordings"

    @property
    def stored_key_path(self) -> Path | None:
        """The file the key lives in when it is the stored one (a running daemon watches it for rotation)."""
        return stored_key.key_path(self.state_dir) if self.api_key_source in ("stored", "generated") else None

    @property
    def binds_loopback(self) -> bool:
        return self.host in ("127.0.0.1", "::1", "localhost") or self.host.startswith("127.")


@dataclass(frozen=True)
class Setting:
    """How one Config field is spelled on the command line, in the environment and in TOML."""

    name: str
    parse: Callable[[str], Any]
    env: str | None = None

    @property
    def env_name(self) -> str:
        return self.env or ENV_PREFIX + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("host", str, env="OPEN_TERMINAL_HOST"),
    Setting("port", _parse_port, env="OPEN_TERMINAL_PORT"),
    Setting("cwd", Path, env="OPEN_TERMINAL_CWD"),
    Setting("api_key", str),
    Setting("cors_allowed_origins", _parse_origins),
    Setting("allowed_hosts", _parse_list),
    Setting("max_connections", _parse_positive_int),
    Setting("header_timeout", _parse_positive_float),
    Setting("keepalive_timeout", _parse_positive_float),
    Setting("state_dir", Path, env="OPEN_TERMINAL_STATE_DIR"),
    Setting("log_dir", Path),
    Setting("execute_timeout", _parse_optional_float),
    Setting("execute_description", str),
    Setting("enable_system_prompt", _parse_bool),
    Setting("system_prompt", str),
    Setting("info", str),
    Setting("max_log_size", _parse_non_negative(int)),
    Setting("log_retention", _parse_non_negative(float)),
    Setting("log_flush_interval", _parse_non_negative(float)),
    Setting("max_processes", _parse_non_negative(int)),
    Setting("file_browser_root", str),
    Setting("session_cwd_ttl", _parse_non_negative(float)),
    Setting("file_root", _parse_directory),
    Setting("binary_mime_prefixes", _parse_list),
    Setting("max_upload_size", _parse_non_negative(int)),
    Setting("upload_url_timeout", _parse_non_negative(float)),
    Setting("link_ttl", _parse_non_negative(float)),
    Setting("copy_max_size", _parse_non_negative(int)),
    Setting("extract_max_size", _parse_non_negative(int)),
    Setting("file_task_timeout", _parse_non_negative(float)),
    Setting("trash", _parse_bool),
    Setting("trash_max_age", _parse_non_negative(float)),
    Setting("trash_max_size", _parse_non_negative(int)),
    Setting("document_timeout", _parse_non_negative(float)),
    Setting("search_timeout", _parse_non_negative(float)),
    Setting("libreoffice", str),
    Setting("preview_timeout", _parse_positive_float),
    Setting("preview_cache_size", _parse_non_negative(int)),
    Setting("max_sessions", _parse_non_negative(int)),
    Setting("detach_timeout", _parse_optional_float),
    Setting("detach_grace", _parse_non_negative(float)),
    Setting("attach_grace", _parse_non_negative(float)),
    Setting("term", str),
    Setting("replay_bytes", _parse_non_negative(int)),
    Setting("recording", _parse_recording),
    Setting("recording_retention", _parse_non_negative(float)),
    Setting("proxy_token_auth", _parse_bool),
    Setting("enable_mcp", _parse_bool),
    Setting("loop_watchdog", _parse_bool),
    Setting("enable_terminal", _parse_bool),
    Setting("enable_notebooks", _parse_bool),
    Setting("max_notebooks", _parse_non_negative(int)),
    Setting("notebook_cell_timeout", _parse_optional_float),
    Setting("notebook_start_timeout", _parse_positive_float),
    Setting("history", _parse_bool),
    Setting("history_max_versions", _parse_positive_int),
    Setting("history_max_file_size", _parse_non_negative(int)),
    Setting("history_max_size", _parse_non_negative(int)),
    Setting("history_max_age", _parse_non_negative(float)),
    Setting("sandbox", _parse_sandbox),
    Setting("sandbox_network", _parse_bool),
    Setting("limit_processes", parse_count),
    Setting("limit_memory", parse_size),
    Setting("limit_file_size", parse_size),
    Setting("limit_cpu_seconds", parse_count),
    Setting("user_limit_processes", parse_count, env="OPEN_TERMINAL_USER_LIMIT_PROCESSES"),
    Setting("user_limit_memory", parse_size, env="OPEN_TERMINAL_USER_LIMIT_MEMORY"),
    Setting("limit_mechanism", parse_mechanism),
    Setting("multi_user", _parse_bool),
    Setting("user_prefix", _parse_user_prefix),
    Setting("user_homes", lambda text: Path(text).expanduser().absolute()),
    Setting("max_users", _parse_non_negative(int)),
    Setting("tenants_file", lambda text: Path(text).expanduser().absolute()),
    Setting("in_container", _parse_bool),
)


def _interpreter_shared() -> bool:
    """Whether any uid can run the daemon's Python (then a user's kernel can, without the sandbox)."""
    from daemon.sandbox import interpreter_folders, reachable_by_others  # the sandbox module imports this one

    return reachable_by_others(interpreter_folders())


def _importable(*modules: str) -> bool:
    """Whether the modules can be imported, without importing them (the notebook libraries cost ~0.2 s)."""
    try:
        return all(importlib.util.find_spec(module) is not None for module in modules)
    except (ImportError, ValueError):
        return False


def _xdg(variable: str, fallback: str) -> Path:
    return Path(os.environ.get(variable) or Path.home() / fallback)


def user_config_path(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "opentermd" / "config.toml"


def read_toml(path: Path, *, required: bool) -> dict[str, Any]:
    if not path.is_file():
        if required:
            raise ConfigError(f"config file not found: {path}")
        return {}
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc


def load(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    config_file: Path | None = None,
    system_file: Path = SYSTEM_CONFIG,
) -> Config:
    """Resolve every setting from its sources; raise ConfigError on the first bad value."""
    user_file = config_file or user_config_path(environ)
    layers = [
        read_toml(system_file, required=False),
        read_toml(user_file, required=config_file is not None),
    ]
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        value = _resolve(setting, flags, environ, layers)
        if value is not None:
            values[setting.name] = value
    values["api_key_source"] = _api_key_source(flags, environ, layers)
    key_from_file = _api_key_from_file(flags, environ)
    if key_from_file is not None:
        values["api_key"] = key_from_file
        values["api_key_file"] = Path(environ["OPEN_TERMINAL_API_KEY_FILE"]).expanduser()
    if user_file.is_file():
        values["config_file"] = user_file
    values["api_key"] = str(values.get("api_key", "")).strip()
    values.setdefault("state_dir", Path(environ.get("XDG_STATE_HOME") or Path.home() / ".local/state") / "opentermd")
    if not values["api_key"]:
        values["api_key"], values["api_key_source"] = _stored_or_generated_key(values["state_dir"])
        values["api_key_generated"] = True
    cwd = Path(values.get("cwd", Path.cwd())).expanduser()
    if not cwd.is_dir():
        raise ConfigError(f"--cwd: not a directory: {cwd}")
    values["cwd"] = cwd.resolve()
    return Config(**values)


def _resolve(
    setting: Setting, flags: Mapping[str, Any], environ: Mapping[str, str], layers: list[dict[str, Any]]
) -> Any:
    if flags.get(setting.name) is not None:
        source, raw = f"--{setting.name.replace('_', '-')}", flags[setting.name]
    elif setting.env_name in environ:
        source, raw = setting.env_name, environ[setting.env_name]
    else:
        source, raw = "", None
        for layer in reversed(layers):
            if setting.name in layer:
                source, raw = f"config key {setting.name!r}", layer[setting.name]
                break
        if raw is None:
            return None
    try:
        return setting.parse(raw if isinstance(raw, str) else _toml_text(raw))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid value for {source}: {raw!r} ({exc})") from exc


def _api_key_source(flags: Mapping[str, Any], environ: Mapping[str, str], layers: list[dict[str, Any]]) -> str:
    if flags.get("api_key") is not None:
        return "flag"
    if "OPEN_TERMINAL_API_KEY" in environ:
        return "environment"
    if "OPEN_TERMINAL_API_KEY_FILE" in environ:
        return "file"
    return "config file" if any("api_key" in layer for layer in layers) else "generated"


def _stored_or_generated_key(state_dir: Path) -> tuple[str, str]:
    """The key kept in the state directory (made there on the first start), and its source."""
    try:
        key, created = stored_key.load_or_create(state_dir)
    except (OSError, UnicodeError) as exc:
        # A read-only state directory must not stop the daemon: the key then lasts this run only.
        logging.getLogger(__name__).warning("cannot store the API key in %s: %s", state_dir, exc)
        return stored_key.generate(), "unstored"
    return key, "generated" if created else "stored"


def _toml_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)


def _api_key_from_file(flags: Mapping[str, Any], environ: Mapping[str, str]) -> str | None:
    """Docker-secrets style `OPEN_TERMINAL_API_KEY_FILE`; a key given on the command line wins."""
    path = environ.get("OPEN_TERMINAL_API_KEY_FILE")
    if flags.get("api_key") is not None or path is None:
        return None
    if "OPEN_TERMINAL_API_KEY" in environ:
        raise ConfigError("OPEN_TERMINAL_API_KEY and OPEN_TERMINAL_API_KEY_FILE are mutually exclusive")
    try:
        return Path(path).read_text("utf-8").strip()
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError(f"cannot read OPEN_TERMINAL_API_KEY_FILE {path}: {reason}") from exc
