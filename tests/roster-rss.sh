#!/usr/bin/env bash
# Peak memory (VmHWM of the gateway process) of one roster dry run with a garbage body.
#
#   tests/roster-rss.sh [BIN [BODY_FILE]]        # default: target/debug/eldergate, 30 MB of bad rows
#   HTTP_EXTRA='roster_max_bytes = 33554432' tests/roster-rss.sh   # with a 32 MiB limit
#
# Prints VmHWM before and after, the answer's status and size, and /healthz afterwards.
set -u
cd "$(dirname "$0")/.."
BIN=${1:-target/debug/eldergate}; BODY=${2:-}
if [ -z "$BODY" ]; then
  BODY=$(mktemp); trap 'rm -f "$BODY"' EXIT
  python3 - "$BODY" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    f.write("resident_id,name,gender,birth_date,statuses,building,unit,room,grid,phone,card_id,emergency_contact\n")
    n = i = 0
    while n < 30_000_000:
        s = f"bad id {i},,x,notadate,,,,,,,zzzz{i},\n"; f.write(s); n += len(s); i += 1
PY
fi
D=$(mktemp -d); HP=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
MP=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
cat > $D/eg.toml <<T
site_id = "s"
gateway_id = "gw"
data_dir = "$D/data"
[http]
listen = "127.0.0.1:$HP"
${HTTP_EXTRA:-}
[broker]
mode = "embedded"
listen = "127.0.0.1:$MP"
[central]
url = "sqlite:central.db"
[[staff]]
id = "S013"
name = "M"
role = "manager"
[[staff]]
id = "S009"
name = "D"
role = "duty"
T
$BIN run --config $D/eg.toml >$D/log 2>&1 &
PID=$!
for i in $(seq 100); do curl -sf http://127.0.0.1:$HP/healthz >/dev/null && break; sleep 0.1; done
echo "before: $(grep VmHWM /proc/$PID/status)"
curl -s -o $D/resp -w "status=%{http_code} resp_bytes=%{size_download} time=%{time_total}s\n" --data-binary @$BODY "http://127.0.0.1:$HP/api/roster?by=S013&dry_run=true"
echo "after:  $(grep -E 'VmHWM|VmPeak' /proc/$PID/status | tr '\n' ' ')"
head -c 300 $D/resp; echo
curl -s -o /dev/null -w "healthz=%{http_code}\n" http://127.0.0.1:$HP/healthz
kill $PID; wait $PID; [ -n "${KEEP:-}" ] && cat $D/log; rm -rf $D
