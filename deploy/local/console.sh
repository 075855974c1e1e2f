#!/usr/bin/env bash
# Builds the web console's bundle: `npm ci` (exact versions of console/package-lock.json), then
# esbuild bundles console/src (with uPlot) into entrypoints/api/console_static/console.{js,css}.
# Idempotent: skips when console_static/bundle.sha256 already records the current inputs.
# `--check` builds into a temporary folder and fails when the result differs from the
# committed bundle. Needs node and npm (CI installs Debian's nodejs and npm).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SRC="$ROOT/console"
OUT="$ROOT/entrypoints/api/console_static"
STAMP="$OUT/bundle.sha256"

inputs_hash() {
    # What the bundle is made of: the lock file (exact versions), package.json and the sources.
    (cd "$SRC" && sha256sum package.json package-lock.json $(find src -type f | LC_ALL=C sort)) \
        | sha256sum | cut -d' ' -f1
}

build() {  # build INTO_DIR
    (cd "$SRC" && { [[ -d node_modules/esbuild && node_modules/.package-lock.json -nt package-lock.json ]] \
        || npm ci --no-audit --no-fund --loglevel=error; })
    "$SRC/node_modules/.bin/esbuild" "$SRC/src/main.js" --bundle --format=esm --target=es2020 \
        --minify --legal-comments=eof --charset=utf8 --log-level=warning \
        --outfile="$1/console.js"
}

outputs_hash() {  # outputs_hash DIR
    (cd "$1" && sha256sum console.js console.css) | sha256sum | cut -d' ' -f1
}

if [[ "${1:-}" == "--check" ]]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    build "$tmp"
    if [[ "$(outputs_hash "$tmp")" != "$(outputs_hash "$OUT")" ]]; then
        echo "console.sh: the committed bundle is not what the sources build; run deploy/local/console.sh" >&2
        exit 1
    fi
    echo "console bundle reproduced"
    exit 0
fi

want="inputs $(inputs_hash)"
if [[ -f "$STAMP" ]] && [[ "$(head -1 "$STAMP")" == "$want" ]] \
    && [[ "$(sed -n 2p "$STAMP")" == "outputs $(outputs_hash "$OUT")" ]]; then
    echo "console bundle up to date"
    exit 0
fi
build "$OUT"
printf '%s\noutputs %s\n' "$want" "$(outputs_hash "$OUT")" > "$STAMP"
echo "console bundle built: $OUT/console.js"
