#!/usr/bin/env bash
# Regenerate docs/console.png, the README's picture of the browser console, with
# the same headless Chromium and Playwright setup the tests use (tests/test_web.py,
# test_screenshot: two pages chatting, seen by one of them).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs
WSPLEX_SCREENSHOT="$PWD/docs/console.png" .venv/bin/python -m pytest -q -p no:cacheprovider \
  tests/test_web.py -k test_screenshot "$@"
echo "wrote docs/console.png"
