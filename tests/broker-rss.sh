#!/usr/bin/env bash
# Memory of the gateway with its embedded broker (rumqttd) under heartbeat load: RSS every
# 10 s for DURATION seconds while `eldergate-sim sim` runs N firmware buttons, each sending a
# heartbeat every second (N heartbeats/s, QoS 1), all registered.
#
#   tests/broker-rss.sh [BIN [N [DURATION]]]   # default: target/debug/eldergate, 2000, 60
#
# Build first: cargo build --workspace --bins (the workspace build has the embedded broker).
# Prints RSS (VmRSS) and the heartbeats the gateway received so far, then VmHWM.
set -u
cd "$(dirname "$0")/.."
BIN=${1:-target/debug/eldergate}; N=${2:-2000}; DUR=${3:-60}
SIM=target/debug/eldergate-sim
D=$(mktemp -d)
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
HP=$(port); MP=$(port)
{
  echo "device_id,kind,link,resident_id,location,heartbeat_s"
  for i in $(seq 1 "$N"); do printf 'btn-%04d,alarm_button,mqtt,,,60\n' "$i"; done
} > "$D/devices.csv"
cat > "$D/eg.toml" <<T
site_id = "s"
gateway_id = "gw"
data_dir = "$D/data"
device_csv = "devices.csv"
[http]
listen = "127.0.0.1:$HP"
[broker]
mode = "embedded"
listen = "127.0.0.1:$MP"
[central]
url = "sqlite:central.db"
[[staff]]
id = "S009"
name = "D"
role = "duty"
[[staff]]
id = "S013"
name = "M"
role = "manager"
T
RUST_LOG=warn "$BIN" run --config "$D/eg.toml" >"$D/log" 2>&1 &
PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HP/healthz" >/dev/null && break; sleep 0.1; done
rss() { grep VmRSS /proc/$PID/status | awk '{printf "%.1f MiB", $2/1024}'; }
received() { curl -s "http://127.0.0.1:$HP/metrics" | awk '/^eldergate_mqtt_received_total\{connection="telemetry"\}/ {print $2}'; }
echo "idle: $(rss)"
RUST_LOG=error "$SIM" sim --broker "mqtt://127.0.0.1:$MP" --site s --buttons "$N" --heartbeat-every 1 \
  --press-every 1000000 --duration $((DUR + 5)) >"$D/sim.log" 2>&1 &
SIMPID=$!
for t in $(seq 0 10 "$DUR"); do
  [ "$t" -gt 0 ] && sleep 10
  echo "t=${t}s rss=$(rss) heartbeats_received=$(received)"
done
echo "peak: $(grep VmHWM /proc/$PID/status | awk '{printf "%.1f MiB", $2/1024}')"
kill $SIMPID 2>/dev/null; wait $SIMPID 2>/dev/null
kill $PID; wait $PID
[ -n "${KEEP:-}" ] && cat "$D/log" "$D/sim.log"
rm -rf "$D"
