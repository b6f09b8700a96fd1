#!/usr/bin/env bash
# The test command (README, .ci/run): install what the tests need, then run
# lint, type checks, the pytest suite and the Autobahn "fast" conformance profile.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests drive for real: a Redis server, a browser, nginx.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)  # a terminal for `wsplex connect`'s prompt
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)  # tests/js: @stomp/stompjs under Node
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)  # tests/test_deploy.py: deploy/nginx.conf
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]} from Debian's packages"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python dependencies in a project virtualenv.
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 \
  | grep -v -e 'is ignored: it is neither' -e '^DEPRECATION' || true
.venv/bin/python -c 'import wsplex, picows, websockets, playwright, redis' # fail early if the install did not work

# JavaScript clients the tests drive under Node, pinned by tests/js/package-lock.json.
(cd tests/js && npm ci --no-audit --no-fund --loglevel=error)

echo "== ruff"; .venv/bin/ruff check .
echo "== mypy --strict"; .venv/bin/mypy
echo "== import contracts"; .venv/bin/lint-imports --no-cache
# pytest's summary is repeated at the end, so the steps after it do not bury it.
summary="$(mktemp)"; trap 'rm -f "$summary"' EXIT
echo "== pytest"; .venv/bin/python -m pytest -q "$@" | tee "$summary"
echo "== autobahn (fast profile)"; scripts/autobahn.sh fast
if [ -f benchmarks/run.py ]; then
  echo "== benchmark harness smoke run"; .venv/bin/python benchmarks/run.py --smoke
fi
echo "== pytest summary (repeated from above)"
if grep -q 'short test summary info' "$summary"; then
  sed -n '/short test summary info/,$p' "$summary"
else
  tail -n 1 "$summary"
fi
