"""A real git repository in tmp_path, made with the real `git` command."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


def git(repo: Path, *arguments: str) -> str:
    """The test's own git (identity given per call with -c, as a person's would be in their config)."""
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=Tester", "-c", "user.email=t@example.com",
                           *arguments], check=True, capture_output=True, text=True).stdout


def git_exit(repo: Path, *arguments: str) -> int:
    """The exit status of a git command expected to fail (a merge with a conflict)."""
    return subprocess.run(["git", "-C", str(repo), *arguments], capture_output=True).returncode


@pytest.fixture
def repo(scratch_environment: Path) -> Path:
    """home/project: one commit (a.txt, b.txt, old.txt), a per-repository identity for API commits."""
    project = scratch_environment / "project"
    project.mkdir()
    git(project, "init", "-q", "-b", "main")
    git(project, "config", "user.name", "Repo Person")
    git(project, "config", "user.email", "repo@example.com")
    (project / "a.txt").write_text("one\ntwo\nthree\n")
    (project / "b.txt").write_text("bee\n")
    (project / "old.txt").write_text("moved text\n" * 5)
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "first")
    return project
