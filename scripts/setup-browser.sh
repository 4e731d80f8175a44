#!/usr/bin/env bash
# Install Debian's chromium for the web page test (tests/test_web_page.py drives it with Playwright
# through `executable_path`: Playwright's own browser download is not used). Does nothing when a
# Chromium is already there; installs with apt only when running as root, else says how and carries
# on (the test then skips, naming the reason).
set -euo pipefail
for candidate in "${CATDOG_CHROMIUM:-}" chromium chromium-browser google-chrome; do
  if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1; then
    exit 0
  fi
done
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup-browser: installing chromium with apt (for tests/test_web_page.py)" >&2
  if ! { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
    echo "setup-browser: installing chromium failed; the web page test will be skipped" >&2
  fi
else
  echo "setup-browser: no Chromium found; install it (sudo apt-get install chromium) or the web page test is skipped" >&2
fi
