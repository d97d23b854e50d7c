"""The MCP room depends on the app's parts, never on daemon.app itself: no import circle.

app.py mounts MCP through daemon.mcp.mount; `opentermd mcp` hands create_app to daemon.mcp.server.serve.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
MCP_ROOM = ROOT / "daemon" / "mcp"
MODULES = sorted(f"daemon.mcp.{path.stem}" for path in MCP_ROOM.glob("*.py") if path.stem != "__init__")


def imported_names(source: Path) -> set[str]:
    """Every module an import statement in `source` names, at any depth (inside functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_room_has_the_modules_this_test_walks() -> None:
    assert {"daemon.mcp.mount", "daemon.mcp.bridge", "daemon.mcp.server", "daemon.mcp.tools"} <= set(MODULES)


@pytest.mark.parametrize("path", sorted(MCP_ROOM.glob("*.py")), ids=lambda path: path.name)
def test_no_mcp_module_imports_the_app(path: Path) -> None:
    assert "daemon.app" not in imported_names(path)


@pytest.mark.parametrize("module", MODULES)
def test_importing_an_mcp_module_leaves_the_app_unloaded(module: str) -> None:
    # A fresh interpreter: this test process has long imported daemon.app through conftest.
    script = f"import sys, {module}; print('daemon.app' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_mount_loads_no_sdk_until_the_app_starts() -> None:
    script = ("import sys, daemon.mcp.mount; "
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mcp', 'mcp_types', 'pydantic', 'starlette')"
              " or m in ('daemon.mcp.bridge', 'daemon.mcp.tools', 'daemon.mcp.server')))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
