"""The deployment files, checked offline: compose.yaml, the Containerfile, the build context and the
Kubernetes manifests (each validated against Kubernetes' own schemas by kubernetes-validate, strict, so a
misspelt field fails). The image itself is built and run by tests/deploy/test_image.py (`make test-image`)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
OVERLAY = KUBERNETES / "overlays" / "per-user-example"
#: The oldest Kubernetes still commonly run, and the newest the package knows.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
VARIABLE = re.compile(r"\$\{(\w+)(?::?[?-][^}]*)?\}")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def interpolate(text: str, values: dict[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:?message}` and `${NAME:-default}`, with every NAME given."""
    return VARIABLE.sub(lambda found: values[found.group(1)], text)


# --- compose.yaml ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = load_yaml(ROOT / "compose.yaml")
    assert isinstance(document, dict)
    return document


def test_compose_runs_open_webui_beside_opentermd_built_from_the_containerfile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"open-webui", "opentermd"}
    assert services["open-webui"]["image"].startswith("ghcr.io/open-webui/open-webui:")
    assert services["opentermd"]["build"] == {"context": ".", "dockerfile": "Containerfile"}
    assert services["open-webui"]["depends_on"]["opentermd"]["condition"] == "service_healthy"
    for name, service in services.items():
        assert service.get("mem_limit") and service.get("cpus"), f"{name} has memory and CPU limits"
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            assert source in compose["volumes"], f"{name} mounts the named volume {source}"
    assert "opentermd-home:/home/user" in services["opentermd"]["volumes"]


def test_compose_preconfigures_open_webuis_connection_with_the_shared_key(compose: dict[str, Any]) -> None:
    services = compose["services"]
    values = {"OPENTERMD_API_KEY": "shared-key-from-dot-env"}
    raw = services["open-webui"]["environment"]["TERMINAL_SERVER_CONNECTIONS"]
    connections = json.loads(interpolate(raw, values))
    assert isinstance(connections, list) and len(connections) == 1
    connection = connections[0]
    assert connection["url"] == "http://opentermd:8000", "the service name is the host, on the image's port"
    assert connection["auth_type"] == "bearer" and connection["enabled"] is True and connection["id"]
    ours = services["opentermd"]["environment"]
    assert interpolate(ours["OPEN_TERMINAL_API_KEY"], values) == connection["key"] == values["OPENTERMD_API_KEY"]
    assert "opentermd" in ours["OPEN_TERMINAL_ALLOWED_HOSTS"].split(","), "the name Open WebUI uses is answered"
    assert "${OPENTERMD_API_KEY:?" in raw, "compose refuses to start without a key rather than run with none"


# --- Containerfile and build context -------------------------------------------------------------

def containerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines = [line for line in (ROOT / "Containerfile").read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, arguments = line.strip().partition(" ")
            found.append((instruction.upper(), " ".join(arguments.split())))
    return found


def test_the_containerfile_makes_the_documented_image() -> None:
    steps = containerfile()
    arguments = {instruction: [a for i, a in steps if i == instruction] for instruction, _ in steps}
    assert arguments["ARG"][0] == "BASE=debian:bookworm-slim" and arguments["FROM"] == ["${BASE}"]
    assert {"SUDO=true", "TOOLKIT=false"} <= set(arguments["ARG"])
    installed = set(shlex.split(arguments["RUN"][0]))
    assert {"bash", "coreutils", "git", "curl", "ca-certificates", "python3", "ripgrep", "sudo", "tini"} <= installed
    assert arguments["COPY"] == ["dist/opentermd /usr/local/bin/opentermd"]
    assert arguments["USER"] == ["user"] and arguments["VOLUME"] == ["/home/user"]
    assert arguments["EXPOSE"] == ["8000"] and arguments["STOPSIGNAL"] == ["SIGTERM"]
    assert "OPEN_TERMINAL_IN_CONTAINER=1" in arguments["ENV"][0]
    assert "/health" in arguments["HEALTHCHECK"][0]
    assert json.loads(arguments["ENTRYPOINT"][0]) == ["/usr/bin/tini", "--"]
    assert json.loads(arguments["CMD"][0]) == ["opentermd", "run", "--host", "0.0.0.0"]


def test_the_build_context_is_the_executable_alone() -> None:
    rules = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert rules == ["*", "!dist/opentermd"]


# --- Kubernetes ----------------------------------------------------------------------------------

def kustomization(folder: Path) -> dict[str, Any]:
    document = load_yaml(folder / "kustomization.yaml")
    assert isinstance(document, dict)
    assert document["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and document["kind"] == "Kustomization"
    return document


def base_resources() -> dict[str, dict[str, Any]]:
    """The base's resources by kind, each file listed in its kustomization holding one."""
    found = {}
    for name in kustomization(BASE)["resources"]:
        document = load_yaml(BASE / name)
        found[document["kind"]] = document
    return found


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_base_manifest_validates_strictly(version: str) -> None:
    listed = kustomization(BASE)["resources"]
    assert sorted(listed) == sorted(path.name for path in BASE.glob("*.yaml") if path.name != "kustomization.yaml")
    for name in listed:
        kubernetes_validate.validate(load_yaml(BASE / name), version, strict=True)


def test_the_validator_is_not_vacuous() -> None:
    broken = base_resources()["StatefulSet"]
    broken["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_the_statefulset_is_hardened_probed_bounded_and_keeps_its_home() -> None:
    resources = base_resources()
    statefulset = resources["StatefulSet"]
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False, "the AI's shell gets no cluster API token"
    [container] = pod["containers"]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert set(container["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/home/user"
    assert statefulset["spec"]["serviceName"] == resources["Service"]["metadata"]["name"]


def test_the_pieces_refer_to_each_other() -> None:
    resources = base_resources()
    pod_template = resources["StatefulSet"]["spec"]["template"]
    labels = pod_template["metadata"]["labels"]
    assert resources["StatefulSet"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert resources["Service"]["spec"]["selector"].items() <= labels.items()
    policy = resources["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    [rule] = policy["ingress"]
    [source] = rule["from"]
    assert source["podSelector"]["matchExpressions"] == [
        {"key": "app.kubernetes.io/component", "operator": "In", "values": ["open-webui"]}], "only Open WebUI gets in"
    # kustomize's `labels` (the per-user overlay's) add themselves to every matchLabels of a NetworkPolicy:
    # Open WebUI's pods would then need our instance label (seen with `kubectl kustomize`).
    assert "matchLabels" not in source["podSelector"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
    secrets = {volume["secret"]["secretName"] for volume in pod_template["spec"]["volumes"] if "secret" in volume}
    assert secrets == {resources["Secret"]["metadata"]["name"]}
    env = {variable["name"]: variable for variable in pod_template["spec"]["containers"][0]["env"]}
    assert env["OPEN_TERMINAL_API_KEY_FILE"]["value"].startswith("/run/secrets/opentermd/")


def assert_references_come_after_their_definitions(env: list[dict[str, Any]]) -> None:
    """Kubernetes expands `$(NAME)` only for a variable defined above it; otherwise it stays literal."""
    defined: set[str] = set()
    for variable in env:
        for name in re.findall(r"\$\((\w+)\)", variable.get("value", "")):
            assert name in defined, f"{variable['name']} names $({name}) before it is defined"
        defined.add(variable["name"])


def overlay_patches() -> list[dict[str, Any]]:
    return [load_yaml(OVERLAY / patch["path"]) for patch in kustomization(OVERLAY)["patches"]]


def test_environment_references_expand() -> None:
    assert_references_come_after_their_definitions(base_resources()["StatefulSet"]["spec"]["template"]["spec"]
                                                   ["containers"][0]["env"])
    for patch in overlay_patches():
        if patch["kind"] == "StatefulSet":
            # A strategic-merge patch's list items come first in the merged list: it must hold its own definitions.
            assert_references_come_after_their_definitions(patch["spec"]["template"]["spec"]["containers"][0]["env"])


def test_the_per_user_overlay_renames_labels_and_brings_its_own_secret() -> None:
    overlay = kustomization(OVERLAY)
    assert overlay["resources"] == ["../../base"]
    suffix = overlay["nameSuffix"]
    assert suffix.startswith("-")
    [labels] = overlay["labels"]
    assert labels["includeSelectors"] is True, "each user's selectors match only that user's pods"
    base = {(document["kind"], document["metadata"]["name"]): document for document in base_resources().values()}
    patched = {(patch["kind"], patch["metadata"]["name"]) for patch in overlay_patches()}
    assert patched <= set(base), "every patch names a base resource (kustomize matches before renaming)"
    assert ("Secret", "opentermd-key") in patched, "the user's own key"
    for patch in overlay_patches():
        if patch["kind"] == "StatefulSet":
            containers = {container["name"] for container in
                          base[("StatefulSet", "opentermd")]["spec"]["template"]["spec"]["containers"]}
            assert {container["name"] for container in patch["spec"]["template"]["spec"]["containers"]} <= containers
            env = {variable["name"]: variable for variable in patch["spec"]["template"]["spec"]["containers"][0]["env"]}
            service = "opentermd" + suffix
            assert service in env["OPEN_TERMINAL_ALLOWED_HOSTS"]["value"].split(","), "answers its renamed Service"
        if patch["kind"] == "Secret":
            kubernetes_validate.validate(patch, KUBERNETES_VERSIONS[0], strict=True)
