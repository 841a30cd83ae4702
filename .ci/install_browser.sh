#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests (tests/test_space_browser.py). Idempotent: does nothing
# when /usr/bin/chromium is already there. Playwright drives this binary instead of its own download.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
    exit 0
fi

# The CI runs as root; elsewhere sudo (which resets the environment, hence `env`).
if [ "$(id -u)" -eq 0 ]; then
    SUDO=(env DEBIAN_FRONTEND=noninteractive)
else
    SUDO=(sudo env DEBIAN_FRONTEND=noninteractive)
fi

"${SUDO[@]}" apt-get update
"${SUDO[@]}" apt-get install -y chromium
/usr/bin/chromium --version
