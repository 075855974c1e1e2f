#!/usr/bin/env bash
# Installs what the console's tests need when it is missing (idempotent): Debian's Chromium
# (+ chromium-driver), which Playwright drives through executable_path (its own browser download
# is not used), and Node.js + npm, with which the bundle check rebuilds the console's script.
set -euo pipefail
need=()
[[ -x /usr/bin/chromium ]] || need+=(chromium chromium-driver)
command -v npm >/dev/null || need+=(nodejs npm)
if ((${#need[@]} == 0)); then
    exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
    echo "chromium.sh: ${need[*]} missing; run as root to apt-get install them" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}"
