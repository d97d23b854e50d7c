"""Which absolute path a request names, under the two rules the reference uses.

Most file endpoints resolve relative paths against the chat's working directory (`X-Session-Id`);
view, serve, upload, archive, mkdir, delete and move resolve them against home (CONTRACT §7).
Both go through the file scope, so `--root` confines every one of them.
"""

from __future__ import annotations

from typing import Any

from daemon.files import mounts
from daemon.files.paths import check_removable, require_named
from daemon.http.endpoints import Call
from daemon.keys import DIRECTORIES, SCOPE


def from_cwd(call: Call[Any, Any], path: str) -> str:
    scope = call.app[SCOPE]
    return scope.target(path, scope.base(call.app[DIRECTORIES].get(call.owner.session_id)))


def from_home(call: Call[Any, Any], path: str) -> str:
    scope = call.app[SCOPE]
    return scope.target(path, scope.base(call.app[DIRECTORIES].home))


def removable_from_home(call: Call[Any, Any], path: str) -> str:
    """A path to delete or move away: named explicitly, and none that holds home, the chat's folder or the root."""
    require_named(path)
    target = from_home(call, path)
    directories, scope = call.app[DIRECTORIES], call.app[SCOPE]
    removed = check_removable(target, home=directories.home, cwd=directories.get(call.owner.session_id),
                              root=scope.root)
    mounts.refuse_removing(removed)
    return target
