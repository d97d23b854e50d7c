"""The Host check: the defence against DNS rebinding.

A page on `evil.example` whose name is re-pointed at 127.0.0.1 can make the victim's browser talk
to this server as if it were `evil.example`'s own: same origin, so no CORS stands in the way. The
one thing the attacker cannot change is the `Host` header, which still says `evil.example`. So the
server answers only host names it knows are its own.

Always allowed, because a browser never sends them for a page the attacker controls:
- IP literals (`127.0.0.1:8000`, `[::1]`, `172.17.0.2`): rebinding needs a DNS name;
- `localhost` and `*.localhost`: browsers resolve those to loopback themselves, never through DNS;
- the address the server is bound to.
Bound to loopback, that is the whole list by default. Bound elsewhere (`0.0.0.0` in a container),
the names clients use cannot be known (`opentermd` on a Docker network), so any host is answered
unless `--allowed-hosts` names them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from daemon.errors import ApiError

#: Container health checks call /health by whatever name the orchestrator uses (a pod IP, the
#: service name); it tells nobody anything, so it answers any host.
EXEMPT_PATHS = frozenset({"/health"})


class HostPolicy:
    def __init__(self, allowed: Sequence[str], bound_host: str, binds_loopback: bool) -> None:
        names = {_normal(name) for name in allowed}
        self._any = "*" in names or (not names and not binds_loopback)
        self._suffixes = tuple(name[1:] for name in names if name.startswith("*."))
        self._names = frozenset(name for name in names if not name.startswith("*.")) | {_normal(bound_host)}

    @property
    def allows_any(self) -> bool:
        return self._any

    def allows(self, host_header: str | None) -> bool:
        """Whether a request with this `Host` header is for us; no header (HTTP/1.0) is not a browser's."""
        if self._any or host_header is None:
            return True
        name = host_name(host_header)
        if name is None:
            return False
        return (
            name in self._names
            or name == "localhost"
            or name.endswith((".localhost", *self._suffixes))
            or _is_ip_literal(name)
        )


def host_name(header: str) -> str | None:
    """`Example.COM.:8000` -> `example.com`, `[::1]:80` -> `::1`; None when it is not a host."""
    header = header.strip()
    if header.startswith("["):
        inside, bracket, rest = header[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return inside.lower()
    name, colon, port = header.rpartition(":")
    if not colon:
        name = header
    elif not port.isdigit():
        return None
    name = _normal(name)
    return name if name and ":" not in name else None


def _normal(name: str) -> str:
    return name.strip().lower().rstrip(".")


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def refusal(host_header: str | None) -> ApiError:
    return ApiError(403, f"Host {host_header!r} is not allowed (see --allowed-hosts)")


def host_middleware(policy: HostPolicy) -> Any:
    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        if request.path not in EXEMPT_PATHS and not policy.allows(host):
            raise refusal(host)
        return await handler(request)

    return check_host
