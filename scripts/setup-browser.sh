#!/usr/bin/env bash
# Install Debian's chromium for the web page test (tests/system/test_web_page.py drives it with Playwright
# through `executable_path`: Playwright's own browser download is not used). Does nothing when a
# Chromium is already there; installs with apt only when running as root, else says how and carries
# on (the test then skips, naming the reason). With CATDOG_REQUIRE_BROWSER=1 (.ci/run sets it) a
# Chromium that cannot be had is an error here, and the test fails instead of skipping.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for candidate in "${CATDOG_CHROMIUM:-}" chromium chromium-browser google-chrome; do
  if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1; then
    exit 0
  fi
done
missing() {
  echo "setup-browser: $1" >&2
  [ "${CATDOG_REQUIRE_BROWSER:-0}" != "1" ] || exit 1
}
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup-browser: installing chromium with apt (for tests/system/test_web_page.py)" >&2
  bash "$ROOT/scripts/apt-install.sh" chromium \
    || missing "installing chromium failed; the web page test will be skipped"
else
  missing "no Chromium found; install it (sudo apt-get install chromium) or the web page test is skipped"
fi
