#!/usr/bin/env bash
# Makes the image the Containerfile starts from, localhost/debian:bookworm-slim, from Debian's own
# packages: no container registry is reachable here. Made once: kept in podman's storage, and as a
# tar under ~/.cache/opentermd/ so a reset storage is refilled without a new bootstrap.
set -euo pipefail
IMAGE=${BASE_IMAGE:-localhost/debian:bookworm-slim}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/opentermd
TAR=$CACHE/debian-bookworm-slim.tar

podman image exists "$IMAGE" && exit 0

# The mirror apt already uses (deb822 .sources first, then one-line sources.list), so the bootstrap
# goes where this machine's packages come from.
mirror() {
    local found
    found=$(awk '/^URIs:/ {uri = $2} /^Suites:/ {for (i = 2; i <= NF; i++) if ($i == "bookworm") {print uri; exit}}' \
            /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
    [ -n "$found" ] || found=$(awk '$1 == "deb" {sub(/\[[^]]*\] */, ""); if ($3 == "bookworm") {print $2; exit}}' \
                                /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n1)
    echo "${found:-http://deb.debian.org/debian}"
}

if [ ! -s "$TAR" ]; then
    mkdir -p "$CACHE"
    # A private TMPDIR: mmdebstrap can exit non-zero when another process walks the /proc it mounts
    # under its temporary folder (a shared /tmp has such walkers here).
    work=$(mktemp -d "$CACHE/mmdebstrap.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    # The dpkg path filters of Debian's own -slim images (no manuals, docs or translations, in this
    # bootstrap and in every later install), and no package lists or .debs left in the layer.
    # Its hooks talk a lot: the log is shown only when it fails.
    TMPDIR=$work mmdebstrap --quiet --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/groff/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/lintian/*' --dpkgopt='path-exclude=/usr/share/linda/*' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        bookworm "$work/base.tar" "$(mirror)" >"$work/log" 2>&1 || { cat "$work/log" >&2; exit 1; }
    mv "$work/base.tar" "$TAR"
fi
podman import --quiet "$TAR" "$IMAGE" >/dev/null
