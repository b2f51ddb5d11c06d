#!/usr/bin/env bash
# Debian's Chromium for the browser tests (Playwright drives it by its path; nothing is downloaded by a test tool).
# Installs only when missing, and only where apt-get can run as root; elsewhere it says what to do.
set -euo pipefail
CHROMIUM="${MNEMOFLOW_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "install-chromium: installing Debian's chromium for the browser tests"
    apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
    exit 0
fi
echo "install-chromium: no Chromium at $CHROMIUM; install Debian's 'chromium' (or set MNEMOFLOW_CHROMIUM) to run the browser tests" >&2
