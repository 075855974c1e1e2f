#!/usr/bin/env bash
# Installs Debian's Chromium for the console's browser tests when it is missing (idempotent).
# Playwright drives this binary through executable_path: its own browser download is not used.
set -euo pipefail
if [[ -x /usr/bin/chromium ]]; then
    exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
    echo "chromium.sh: /usr/bin/chromium is missing; run as root to apt-get install it" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium chromium-driver
