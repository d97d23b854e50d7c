"""Smoke suite against the container image (`make test-image`, which `make test` runs after the binary's).

Selected only with `-m image` (the default addopts deselect it); OPENTERMD_IMAGE names the image
`make image` built. Each test's containers and volumes have names of their own and are removed at the
end, also on failure. Ports are published on 127.0.0.1 only (podman picks a free one). Without podman
the tests skip, which fails in CI (tests/conftest.py): `make test-image` installs it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import eventually, wait_until
from tests.smoke import terminal_echoes, writes_reads_and_uploads

pytestmark = pytest.mark.image

ROOT = Path(__file__).resolve().parent.parent.parent
#: runc and fixed ulimits: crun cannot start containers on these VMs (deploy/podman/containers.conf).
CONTAINERS_CONF = ROOT / "deploy" / "podman" / "containers.conf"
START_TIMEOUT = 60.0
#: Docker's and Podman's grace before SIGKILL: a clean stop must come well inside it.
STOP_GRACE = 10
KEY = "image-smoke-key-0123456789abcdef"
KEY_LINE = re.compile(r"API key:\s+(\S+)\s+\((generated, stored|stored) in (\S+)\)")


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}
    result = subprocess.run(["podman", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed: `make test-image` installs it")
    named = os.environ.get("OPENTERMD_IMAGE")
    if not named:
        pytest.fail("OPENTERMD_IMAGE is not set: `make test-image` builds the image and sets it")
    if podman("image", "exists", named, check=False).returncode != 0:
        pytest.fail(f"no image {named}: `make image` builds it")
    return named


def unique(what: str) -> str:
    return f"opentermd-test-{what}-{uuid.uuid4().hex[:10]}"


@dataclass
class Container:
    """One `podman run -d` of the image, published on a free loopback port, with a named home volume."""

    image: str
    volume: str
    extra: list[str] = field(default_factory=list)
    name: str = field(default_factory=lambda: unique("run"))
    url: str = ""

    def start(self) -> float:
        """Run it and wait until /health answers; the seconds that took."""
        started = time.monotonic()
        podman("run", "--detach", "--name", self.name, "--publish", "127.0.0.1::8000",
               "--volume", f"{self.volume}:/home/user", *self.extra, self.image)
        port = podman("port", self.name, "8000/tcp").stdout.strip().rsplit(":", 1)[1]
        self.url = f"http://127.0.0.1:{port}"
        if not wait_until(self.healthy, timeout=START_TIMEOUT):
            pytest.fail(f"/health did not answer within {START_TIMEOUT:.0f} s:\n{self.logs()}")
        return time.monotonic() - started

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=5) as reply:
                return bool(reply.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def stop(self) -> float:
        started = time.monotonic()
        podman("stop", "--time", str(STOP_GRACE), self.name, timeout=STOP_GRACE + 60)
        return time.monotonic() - started

    def exit_code(self) -> int:
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", self.name).stdout.strip())

    def remove(self) -> None:
        podman("rm", "--force", "--time", "0", self.name, check=False)


@pytest.fixture
def volume(image: str) -> Iterator[str]:
    name = unique("home")
    podman("volume", "create", name)
    yield name
    podman("volume", "rm", "--force", name, check=False)


@pytest.fixture(scope="module")
def running(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """The key as a Docker or Kubernetes secret: a file, named by OPEN_TERMINAL_API_KEY_FILE."""
    secret = tmp_path_factory.mktemp("secret") / "api-key"
    secret.write_text(KEY + "\n")
    secret.chmod(0o644)  # the image's `user` (uid 1000) reads it; as a Docker secret it would be 0444
    home = unique("home")
    podman("volume", "create", home)
    container = Container(image, home, ["--volume", f"{secret}:/run/secrets/api-key:ro",
                                        "--env", "OPEN_TERMINAL_API_KEY_FILE=/run/secrets/api-key"])
    try:
        container.start()
        yield container
    finally:
        container.remove()
        podman("volume", "rm", "--force", home, check=False)


def session(key: str = KEY) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}, timeout=aiohttp.ClientTimeout(total=30))


async def run(url: str, command: str, key: str = KEY) -> str:
    async with session(key) as http, http.post(f"{url}/execute?wait=20", json={"command": command}) as reply:
        body = await reply.json()
        assert reply.status == 200, body
        assert body["exit_code"] == 0, body
        return "".join(entry["data"] for entry in body["output"])


def test_the_banner_names_the_key_file_and_no_exposure_warning(running: Container) -> None:
    logs = running.logs()
    assert "API key:   (from the OPEN_TERMINAL_API_KEY_FILE file)" in logs, logs
    assert KEY not in logs, "a configured key is never printed"
    assert "warning" not in logs.lower(), "0.0.0.0 is the container's only way in: nothing to warn about"


async def test_a_command_runs_as_user_in_the_home_with_passwordless_sudo(running: Container) -> None:
    output = await run(running.url, "id -un; id -u; pwd; echo $HOME; sudo -n id -u; rg --version | head -1; "
                                     "git --version")
    lines = output.split()
    assert lines[:6] == ["user", "1000", "/home/user", "/home/user", "0", "ripgrep"], output
    assert "git version" in output


async def test_write_read_and_upload(running: Container) -> None:
    async with session() as http:
        payload = await writes_reads_and_uploads(http, running.url, "/home/user/in")
    assert (await run(running.url, "sha256sum < in/up.bin")).split()[0] == hashlib.sha256(payload).hexdigest()


async def test_terminal_echo_over_websocket(running: Container) -> None:
    async with session() as http:
        await terminal_echoes(http, running.url, KEY)


async def test_the_login_page_opens(running: Container) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{running.url}/") as reply:
        text = await reply.text()
        assert reply.status == 200 and reply.content_type == "text/html"
        assert "<form" in text.lower()


async def test_orphans_are_reaped(running: Container) -> None:
    """tini is pid 1: a process whose parent left (`setsid cmd &`) is re-parented to it and reaped when it
    ends. The onefile launcher as pid 1 would leave it a zombie for the container's life (tried: it does)."""
    await run(running.url, "(setsid sleep 0.2 &)")

    async def sleep_is_gone() -> bool:
        return (await run(running.url, "ps -eo stat=,comm= | grep -c ' sleep$' || true")).strip() == "0"

    await eventually(sleep_is_gone, timeout=30)


def test_the_image_healthcheck_passes(running: Container) -> None:
    result = podman("healthcheck", "run", running.name, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_sudo_build_argument_takes_sudo_away(image: str) -> None:
    """`--build-arg SUDO=false`: the same image but for the sudoers entry (its layers come from the cache)."""
    tag = f"localhost/{unique('nosudo')}:latest"
    base = os.environ.get("OPENTERMD_BASE_IMAGE", "debian:bookworm-slim")
    try:
        podman("build", "--quiet", "--format", "docker", "--pull=never", "--build-arg", f"BASE={base}",
               "--build-arg", "SUDO=false", "--tag", tag, "--file", str(ROOT / "Containerfile"), str(ROOT),
               timeout=600)
        result = podman("run", "--rm", "--entrypoint", "sh", tag, "-c", "id -un; sudo -n true || echo refused",
                        check=False)
        assert result.stdout.split() == ["user", "refused"], result.stdout + result.stderr
    finally:
        podman("rmi", "--force", tag, check=False)


async def test_stop_is_clean_and_the_home_and_generated_key_survive_a_new_container(image: str, volume: str) -> None:
    first = Container(image, volume)
    second = Container(image, volume)
    try:
        to_healthy = first.start()
        found = KEY_LINE.search(first.logs())
        assert found and found.group(2) == "generated, stored", first.logs()
        key, stored_in = found.group(1), found.group(3)
        assert stored_in.startswith("/home/user/"), "the generated key lives in the volume"
        await run(first.url, "echo kept > survives.txt", key)
        # A command still running, that the stop must end too.
        async with session(key) as http, http.post(f"{first.url}/execute", json={"command": "sleep 300"}) as reply:
            assert reply.status == 200 and (await reply.json())["status"] == "running"
        took = first.stop()
        assert first.exit_code() == 0, first.logs()
        assert took < STOP_GRACE, f"stopped after {took:.1f} s: SIGKILL, not a clean exit"
        first.remove()
        second.start()
        # Its log says where the key is, not the key: a container's log is kept, and has it once already.
        assert f"API key:   (stored in {stored_in}; `opentermd key` in the container prints it)" in second.logs()
        assert key not in second.logs(), second.logs()
        assert podman("exec", second.name, "opentermd", "key").stdout.strip() == key
        assert await run(second.url, "cat survives.txt", key) == "kept\r\n"
        print(f"\nimage figures: start to healthy {to_healthy:.2f} s, stop {took:.2f} s")
    finally:
        first.remove()
        second.remove()
