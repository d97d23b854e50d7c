# Two commands do all set-up: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.runtime-installed
TEST_STAMP := $(VENV)/.test-installed
VENDOR_STAMP := static/vendor/.installed
BUILD_STAMP := $(VENV)/.build-installed
ARGS ?=

.PHONY: setup run test fuzz lint bench debian-packages clean
.PHONY: binary test-binary container-packages image test-image

setup: $(RUNTIME_STAMP) $(VENDOR_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The mcp extra makes `opentermd mcp` work; it is imported only by that command. The notebooks extra
# (ipykernel) gives the notebooks a Python kernel when the machine has no kernelspec of its own.
$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[mcp,notebooks]'
	touch $@

$(TEST_STAMP): pyproject.toml $(RUNTIME_STAMP)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Front-end libraries come from npm (pinned in package-lock.json) and are copied into
# static/vendor/, which git ignores; nothing is loaded from a CDN. The file page's editor
# (CodeMirror 6) is bundled by esbuild into one script that needs no eval. The terminal page's
# xterm.js 6 and its fit, web-links, search, unicode11 (emoji and CJK widths) and clipboard (OSC 52)
# addons are bundled from their ES modules into one script that sets window.OpentermdXterm (a third
# smaller than the separate UMD files), next to xterm.css.
# The pages' icons (lucide-static) are one SVG sprite of the names daemon/pages/icons.py lists.
$(VENDOR_STAMP): package.json package-lock.json static/src/editor.js daemon/pages/icons.py
	npm ci --no-audit --no-fund --loglevel=error
	$(PYTHON) daemon/pages/icons.py node_modules/lucide-static/icons static/vendor/icons/sprite.svg
	mkdir -p static/vendor/swagger-ui static/vendor/xterm
	cp node_modules/swagger-ui-dist/{swagger-ui.css,swagger-ui-bundle.js,favicon-32x32.png} \
	   static/vendor/swagger-ui/
	node_modules/.bin/esbuild static/src/editor.js --bundle --minify --format=iife --log-level=warning \
	  --outfile=static/vendor/editor/editor.js
	echo 'export { Terminal } from "@xterm/xterm"; export { FitAddon } from "@xterm/addon-fit";' \
	     'export { WebLinksAddon } from "@xterm/addon-web-links"; export { SearchAddon } from "@xterm/addon-search";' \
	     'export { Unicode11Addon } from "@xterm/addon-unicode11"; export { ClipboardAddon } from "@xterm/addon-clipboard";' \
	  | node_modules/.bin/esbuild --bundle --minify --format=iife --global-name=OpentermdXterm \
	    --log-level=warning --outfile=static/vendor/xterm/xterm.js
	cp node_modules/@xterm/xterm/css/xterm.css static/vendor/xterm/
	touch $@

run: setup
	$(BIN)/opentermd run $(ARGS)

# Debian's chromium drives the browser tests (Playwright never downloads a browser here);
# ripgrep is what /files/grep uses when present, and what the grep benchmark compares against.
# LibreOffice without its GUI renders office documents for /files/view?preview=true (tests/files/test_preview.py);
# writer, calc and impress cover text documents, sheets and slides.
LIBREOFFICE_PACKAGES := libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui
debian-packages:
	@command -v chromium >/dev/null && command -v rg >/dev/null && command -v soffice >/dev/null && \
	  command -v bwrap >/dev/null || { \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq chromium ripgrep bubblewrap $(LIBREOFFICE_PACKAGES) >/dev/null; }

lint: $(TEST_STAMP)
	$(BIN)/ruff check daemon tests bench
	$(BIN)/mypy

# The suite runs on every core (pytest-xdist); a test file stays in one worker, as its tests share
# module fixtures (a daemon per file). `make test PYTEST_WORKERS=0` runs it in one process.
PYTEST_WORKERS ?= auto
# The binary is built first, so the bench smoke test (which prefers it) never runs a stale one.
# The sandbox's core: the same suites again with every test server under `--sandbox bwrap`
# (tests/conftest.py reads OPEN_TERMINAL_TEST_SANDBOX); tests marked host_view reach outside the workspace.
SANDBOX_CORE := tests/test_sandbox.py tests/sandbox tests/processes/test_execute.py tests/terminals/test_terminals.py \
                tests/net tests/git tests/notebooks/test_notebooks.py \
                tests/files tests/http/test_sessions.py
test: setup $(TEST_STAMP) debian-packages lint binary
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile $(ARGS)
	OPEN_TERMINAL_TEST_SANDBOX=bwrap $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile \
	  -m "not binary and not host_view" $(SANDBOX_CORE)
	$(MAKE) test-binary
	$(MAKE) test-image

# `make test` fuzzes /openapi.json briefly with a fixed seed; this runs far more cases with a fresh seed
# each time, over the hidden endpoints too. OPENTERMD_FUZZ_SEED=<seed> replays a failing run.
FUZZ_EXAMPLES ?= 1000
fuzz: setup $(TEST_STAMP)
	OPENTERMD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) OPENTERMD_FUZZ_HIDDEN=1 $(BIN)/pytest -n $(PYTEST_WORKERS) tests/fuzz $(ARGS)

# The reference server (open-terminal 0.14.5 from PyPI) in a venv of its own, which git ignores;
# `make bench` runs every workload against it and opentermd, alternating, and writes BENCHMARKS.md.
.bench/.installed:
	$(PYTHON) -m venv .bench
	.bench/bin/pip install -q open-terminal==0.14.5
	touch $@

bench: setup debian-packages .bench/.installed binary
	$(BIN)/python bench/run.py --write $(ARGS)
	$(BIN)/python bench/sandbox.py

clean:
	rm -rf $(VENV) node_modules static/vendor .pytest_cache .mypy_cache .ruff_cache .hypothesis dist build .bench

# The single executable: PyInstaller onefile from build.spec, with templates/ and static/ inside.
$(BUILD_STAMP): pyproject.toml $(RUNTIME_STAMP)
	$(BIN)/pip install -q -e '.[build]'
	touch $@

BINARY_SOURCES := build.spec pyproject.toml $(VENDOR_STAMP) $(shell find daemon templates static -type f \
                    -not -path 'static/vendor/*' -not -path 'static/src/*' -not -name '*.pyc' 2>/dev/null)

dist/opentermd: $(BINARY_SOURCES) | $(BUILD_STAMP)
	$(BIN)/pyinstaller --noconfirm --clean --log-level=WARN --distpath dist --workpath build build.spec

binary: setup $(BUILD_STAMP) dist/opentermd

# Smoke suite against the built executable (not the source tree); `make test` runs it too.
test-binary: binary $(TEST_STAMP)
	OPENTERMD_BINARY=dist/opentermd $(BIN)/pytest -m binary tests/binary

# The container image (Containerfile) with Podman, holding dist/opentermd. No registry is reachable here,
# so its Debian base is made once from Debian's packages and cached (deploy/podman/base-image.sh); crun
# cannot start containers on these VMs, so podman runs with runc and fixed ulimits (deploy/podman/containers.conf).
# `--format docker` keeps the HEALTHCHECK (the OCI format has none).
IMAGE ?= localhost/opentermd:latest
BASE_IMAGE := localhost/debian:bookworm-slim
PODMAN := CONTAINERS_CONF=$(CURDIR)/deploy/podman/containers.conf podman
container-packages:
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v mmdebstrap >/dev/null || { \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq podman runc mmdebstrap >/dev/null; }

# The build the tag named before is removed once replaced: untagged, each would keep its 50 MB executable.
image: binary container-packages
	BASE_IMAGE=$(BASE_IMAGE) deploy/podman/base-image.sh
	previous=$$($(PODMAN) image inspect --format '{{.Id}}' $(IMAGE) 2>/dev/null); \
	$(PODMAN) build --quiet --format docker --pull=never --build-arg BASE=$(BASE_IMAGE) --tag $(IMAGE) \
	  --file Containerfile . && \
	if [ -n "$$previous" ] && [ "$$previous" != "$$($(PODMAN) image inspect --format '{{.Id}}' $(IMAGE))" ]; then \
	  $(PODMAN) rmi "$$previous" >/dev/null 2>&1 || true; fi

# Smoke suite against the image: start, /health, a command, files, upload, a terminal, the login page,
# `podman stop` (exit 0 inside 10 s), and the home and the generated key across a new container.
test-image: image $(TEST_STAMP)
	OPENTERMD_IMAGE=$(IMAGE) OPENTERMD_BASE_IMAGE=$(BASE_IMAGE) $(BIN)/pytest -m image tests/deploy
