"""`opentermd run | mcp | key | --version`: parse flags, load the config, serve until a signal."""

from __future__ import annotations

import argparse
import asyncio
import enum
import gc
import logging
import os
import resource
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from daemon import __version__, config, sandbox, shutdown, stored_key, users
from daemon.files import worker
from daemon.key_source import describe_key, source_name
from daemon.resources import keep_inherited_descriptors, raise_open_file_limit


class Exit(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="opentermd", description="A real shell for an AI and its human.")
    top.add_argument("--version", action="version", version=f"opentermd {__version__}")
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="start the daemon")
    run.add_argument("--host", help="address to bind (default 127.0.0.1)")
    run.add_argument("--port", help="port to bind (default 8000; 0 picks a free one)")
    run.add_argument("--cwd", help="working directory: home of relative paths and commands")
    run.add_argument("--api-key", help="bearer key (default: the one stored in the state directory, "
                     "generated on the first start)")
    run.add_argument("--config", help="TOML config file (instead of the user config)")
    run.add_argument("--cors-allowed-origins", help="comma-separated origins, or * (default)")
    run.add_argument("--allowed-hosts", help="comma-separated host names the server answers, or * "
                     "(default: loopback names when bound to loopback, any host otherwise)")
    run.add_argument("--root", dest="file_root", help="confine every file endpoint beneath this directory")
    run.add_argument("--sandbox", choices=("off", "bwrap"),
                     help="run commands and terminal shells inside bubblewrap (default off)")
    run.add_argument("--multi-user", action="store_const", const="true",
                     help="one account and home per X-User-Id (as root; without root needs --sandbox bwrap)")
    for name, what in (("processes", "processes"), ("memory", "memory, e.g. 2G"),
                       ("file-size", "bytes a file may grow to"), ("cpu-seconds", "CPU seconds of each process")):
        run.add_argument(f"--limit-{name}", help=f"per command tree and terminal: {what} (default: no limit)")
    run.add_argument("--user-limit-processes", help="processes of all one user's commands and terminals together")
    run.add_argument("--user-limit-memory", help="memory of all one user's commands and terminals together, e.g. 4G")
    run.add_argument("--limit-mechanism", choices=("auto", "cgroup2", "cgroup1", "rlimit"),
                     help="how limits are enforced (default auto: cgroup v2, else v1, else rlimits)")
    mcp = commands.add_parser("mcp", help="serve the API's tools over MCP (needs the `mcp` extra)")
    mcp.add_argument("--transport", choices=("stdio", "streamable-http"), default="stdio",
                     help="stdio (default; no auth) or streamable-http (bearer API key)")
    mcp.add_argument("--host", help="address for streamable-http (default 127.0.0.1)")
    mcp.add_argument("--port", help="port for streamable-http (default 8000)")
    mcp.add_argument("--cwd", help="working directory: home of relative paths and commands")
    mcp.add_argument("--api-key", help="bearer key for streamable-http (default: generated and printed)")
    mcp.add_argument("--config", help="TOML config file (instead of the user config)")
    key = commands.add_parser("key", help="print the API key in use (the stored one unless configured)")
    key.add_argument("--rotate", action="store_true",
                     help="replace the stored key; a running daemon ends the old key's sessions")
    key.add_argument("--config", help="TOML config file (instead of the user config)")
    return top


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
         out: TextIO | None = None) -> int:
    out = out or sys.stdout
    argv = sys.argv[1:] if argv is None else list(argv)
    if worker.is_worker_command(argv):
        return worker.main(argv)
    args = parser().parse_args(argv)
    flags = {name: value for name, value in vars(args).items()
             if name not in ("command", "config", "transport", "rotate")}
    try:
        settings = config.load(flags, os.environ if environ is None else environ,
                               config_file=Path(args.config) if args.config else None)
    except config.ConfigError as exc:
        print(f"opentermd: {exc}", file=sys.stderr)
        return Exit.USAGE
    if args.command == "key":
        return print_key(settings, args.rotate, out)
    if (args.command == "mcp" or settings.enable_mcp) and (missing := _mcp_sdk_missing()) is not None:
        wanted = "MCP mode" if args.command == "mcp" else "OPEN_TERMINAL_ENABLE_MCP"
        print(f"opentermd: {wanted} needs the MCP SDK (pip install 'opentermd[mcp]'): {missing}", file=sys.stderr)
        return Exit.USAGE
    if args.command in ("run", "mcp") and (problem := _sandbox_problem(settings) or _tenants_problem(settings)
                                           or _limits_problem(settings)):
        print(f"opentermd: {problem}", file=sys.stderr)
        return Exit.USAGE
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise_open_file_limit()
    keep_inherited_descriptors()
    try:
        asyncio.run(serve_mcp(settings, args.transport) if args.command == "mcp" else serve(settings, out))
    except OSError as exc:
        print(f"opentermd: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return Exit.ERROR
    return Exit.OK


def print_key(settings: config.Config, rotate: bool, out: TextIO) -> int:
    """`opentermd key [--rotate]`: the key a daemon started with these settings uses."""
    if not rotate:
        print(settings.api_key, file=out)
        return Exit.OK
    if settings.stored_key_path is None:
        # Rotating the stored file would not change the key the daemon takes from its configuration.
        print(f"opentermd: the API key comes from the {source_name(settings.api_key_source)}; "
              "change it there (--rotate replaces only a stored key)", file=sys.stderr)
        return Exit.USAGE
    try:
        key = stored_key.rotate(settings.state_dir)
    except OSError as exc:
        print(f"opentermd: cannot store the new key in {settings.state_dir}: {exc.strerror or exc}", file=sys.stderr)
        return Exit.ERROR
    print(key, file=out)
    return Exit.OK


def _mcp_sdk_missing() -> str | None:
    """Why the MCP SDK cannot be loaded, or None. Tried before serving (it is loaded right after
    anyway) so that a missing or broken SDK is one line, not a traceback from a running server."""
    try:
        import mcp.server.lowlevel  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


async def serve(settings: config.Config, out: TextIO) -> None:
    from daemon.app import create_app
    from daemon.http.connections import AcceptErrorLimiter, Limits, fitted_to_open_files, start_server
    from daemon.keys import SESSIONS

    stop = _stop_on_signals()
    loop = asyncio.get_running_loop()
    AcceptErrorLimiter().install(loop)
    workers = shutdown.install_worker_pool(loop)
    app = create_app(settings)
    limits = fitted_to_open_files(Limits(settings.max_connections, settings.header_timeout,
                                         settings.keepalive_timeout), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    if limits.max_connections < settings.max_connections:
        logging.getLogger(__name__).warning("at most %d connections at once: the open-files limit allows no more",
                                            limits.max_connections)
    runner, site = await start_server(app, settings.host, settings.port, limits, shutdown.REQUEST_GRACE)
    try:
        _announce(settings, site.port, app[SESSIONS].login_token(), out)
        # Everything built so far lives as long as the daemon; keeping it out of the collector's
        # sight makes full collections short, which keeps request latency free of spikes.
        gc.freeze()
        await stop.wait()
    finally:
        await runner.cleanup()
    shutdown.release_workers(workers)


async def serve_mcp(settings: config.Config, transport: str) -> None:
    from daemon.app import create_app
    from daemon.mcp.server import serve

    await serve(settings, transport, _stop_on_signals(), create_app)


def _tenants_problem(settings: config.Config) -> str | None:
    """Why the tenants file cannot be used at start (later, a broken file keeps the last good tenants)."""
    from daemon import tenants

    try:
        if settings.tenants_file is not None:
            tenants.read(settings.tenants_file)
    except tenants.TenantsError as exc:
        return f"OPEN_TERMINAL_TENANTS_FILE: {exc}"
    return None


def _limits_problem(settings: config.Config) -> str | None:
    """Why the limits asked for cannot be enforced here (a mechanism that is missing), or None."""
    from daemon import limits

    try:
        limits.from_config(settings).close()  # made once to be sure, and removed: the app makes its own
    except limits.LimitsUnavailable as exc:
        return str(exc)
    return None


def _sandbox_problem(settings: config.Config) -> str | None:
    """Why the sandbox asked for cannot be made here (before anything is served), or None."""
    try:
        confinement = sandbox.from_config(settings)
        if confinement is not None:
            sandbox.check(confinement)
        users.from_config(settings, confinement)
    except (sandbox.SandboxUnavailable, users.UsersUnavailable) as exc:
        return str(exc)
    return None


def _stop_on_signals() -> asyncio.Event:
    """SIGTERM or SIGINT starts a graceful shutdown; a second one exits at once."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def first() -> None:
        stop.set()
        shutdown.arm_hard_deadline()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: os._exit(Exit.ERROR))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, first)
    return stop


def _announce(settings: config.Config, port: int, login_token: str, out: TextIO) -> None:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    lines = [f"opentermd {__version__}", f"  Local URL: http://{host}:{port}"]
    lines.append(f"  API key:   {describe_key(settings)}")
    lines.append(f"  Home:      {settings.home}")
    lines.append(f"  Web UI:    http://{host}:{port}/?token={login_token}  (one-time login link)")
    print("\n".join(lines), file=out, flush=True)
    if (warning := exposure_warning(settings)) is not None:
        print(warning, file=sys.stderr, flush=True)


def exposure_warning(settings: config.Config) -> str | None:
    """The warning for an address other machines can reach, or None. In the container image
    (OPEN_TERMINAL_IN_CONTAINER, set by the Containerfile) 0.0.0.0 is the container's only way in:
    what reaches it is decided by the published ports, so there is nothing to warn about."""
    if settings.binds_loopback or settings.in_container:
        return None
    hosts = "" if settings.allowed_hosts else \
        "; any Host name is answered: name yours with --allowed-hosts (DNS-rebinding defence)"
    return (f"opentermd: warning: listening on {settings.host}, reachable from other machines; "
            f"anyone with the key gets a shell{hosts}")
