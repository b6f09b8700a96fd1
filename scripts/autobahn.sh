#!/usr/bin/env bash
# Run the Autobahn|Testsuite fuzzing client against a fresh wsplex (echo protocol)
# and print the counts. Usage: scripts/autobahn.sh [fast|full|quick|CASES]
# Exit status: 0 when no case FAILED (or when this machine has no Python 2.7,
# which the suite needs: then it says so and skips), 1 when a case FAILED.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-fast}"

py27="${AB_PY27:-}"
if [ -z "$py27" ] && command -v pyenv >/dev/null 2>&1; then
  v="$(pyenv versions --bare 2>/dev/null | grep -m1 '^2\.7' || true)"
  [ -n "$v" ] && py27="$(pyenv root)/versions/$v/bin/python"
fi
[ -n "$py27" ] || py27="$(command -v python2.7 || true)"
if [ -z "$py27" ]; then
  echo "autobahn: SKIPPED: no Python 2.7 on this machine (the suite runs only on 2.7; set AB_PY27)"
  exit 0
fi
export AB_PY27="$py27"

port="$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
log="$(mktemp /tmp/wsplex-autobahn.XXXXXX.log)"
# Cases 9.3.1 and 9.4.1 send a 4 MiB message in 65,536 fragments of 64 bytes.
.venv/bin/wsplex --host 127.0.0.1 -p "$port" --protocols echo --max-message-size 64MiB \
  --max-messages-per-second 1000000 --max-fragments 100000 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q "listening on" "$log" && break
  kill -0 $server 2>/dev/null || { cat "$log"; exit 2; }
  sleep 0.1
done
set +e
AB_PROTOCOLS=echo AB_AGENT=wsplex tools/autobahn/autobahn.sh "ws://127.0.0.1:$port/" "$profile"
rc=$?
set -e
if ! kill -0 $server 2>/dev/null; then
  echo "autobahn: the server died during the run; its log:"; cat "$log"; exit 1
fi
exit $rc
