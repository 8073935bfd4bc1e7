#!/usr/bin/env bash
# The unit under a real systemd: boot a throwaway bookworm root with systemd-nspawn and
# run the installed service with every hardening setting in force.
#
#   sudo systemd/test-nspawn-boot.sh        (needs systemd-container, mosquitto, network)
#
# install.sh --root sets the root up; the agent replays the bundled demo session and
# publishes to a Mosquitto on this host (nspawn shares the host's network); its password
# reaches it through LoadCredential=. A check unit inside the container then records:
# the service active with Type=notify (READY=1 arrived), the STATUS= line, the seccomp
# filter, NoNewPrivs and an empty capability set on the agent's process, and finally the
# watchdog: with a drop-in WatchdogSec=4, the agent is frozen (SIGSTOP) and systemd must
# kill it for the missing WATCHDOG=1 and restart it. Cached base: $EMOTION_AGENT_CACHE.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${EMOTION_AGENT_CACHE:-/work/cache}
BASE=$CACHE/bookworm-amd64-base.tar.zst
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 2; }
command -v systemd-nspawn >/dev/null || { echo "apt install systemd-container" >&2; exit 2; }
[ -f "$BASE" ] || mmdebstrap --variant=minbase --include=systemd,systemd-sysv,ca-certificates \
    bookworm "$BASE" http://deb.debian.org/debian

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ea-nspawn.XXXXXX")
R=$WORK/root
BROKER_PID=""
SUB_PID=""
cleanup() {
    [ -n "$SUB_PID" ] && kill "$SUB_PID" 2>/dev/null
    [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir "$R" "$WORK/src"
tar -C "$R" --zstd -xpf "$BASE"
tar -C "${EMOTION_AGENT_SRC:-$HERE/..}" --exclude=.git --exclude=.venv --exclude='*.egg-info' \
    --exclude=__pycache__ --exclude=build -cf - . | tar -C "$WORK/src" -xf -
cp /etc/resolv.conf "$R/etc/resolv.conf"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$R/usr/local/share/ca-certificates/"
    chroot "$R" update-ca-certificates >/dev/null 2>&1
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$R/etc/pip.conf"
fi
"$WORK/src/systemd/install.sh" --root "$R"

# a broker on the host that wants a password, and a subscriber
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mosquitto_passwd -c -b "$WORK/passwd" agent 's3cret-credential' >/dev/null 2>&1
printf 'listener %s 127.0.0.1\nallow_anonymous false\npassword_file %s\nuser root\n' \
    "$PORT" "$WORK/passwd" >"$WORK/mosquitto.conf"
mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
BROKER_PID=$!
sleep 0.5
mosquitto_sub -p "$PORT" -u agent -P 's3cret-credential' -t 'emotion-agent/nspawn/#' -v \
    >"$WORK/received" 2>&1 &
SUB_PID=$!

printf '%s' 's3cret-credential' >"$R/etc/emotion-agent/mqtt_password"
cat >"$R/etc/emotion-agent/config.yaml" <<EOF
device: {name: nspawn}
mqtt:
  broker: mqtt://127.0.0.1:$PORT
  username: agent
  password: {credential: mqtt_password}
sources:
  replay: {session: /opt/emotion-agent/venv/lib/python3.11/site-packages/agent/sessions/synthetic, speed: 5}
privacy: {consent: true}
EOF
mkdir -p "$R/etc/systemd/system/emotion-agent.service.d"
printf '[Service]\nWatchdogSec=4\nTimeoutAbortSec=3\n' \
    >"$R/etc/systemd/system/emotion-agent.service.d/test-watchdog.conf"
cat >"$R/usr/local/sbin/ea-check" <<'EOF'
#!/bin/bash
out=/root/result
show() { systemctl show emotion-agent -p "$1" --value; }
for _ in $(seq 60); do [ "$(show ActiveState)" = active ] && break; sleep 1; done
sleep 10
pid=$(show MainPID)
{
  echo "active: $(show ActiveState)/$(show SubState) type=$(show Type) restarts=$(show NRestarts)"
  echo "status: $(show StatusText)"
  echo "user: $(id -nu "$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")")" \
    "groups: $(for g in $(awk '/^Groups:/ {$1=""; print}' "/proc/$pid/status"); do getent group "$g" | cut -d: -f1; done | xargs)"
  grep -E '^(NoNewPrivs|Seccomp|CapEff|CapBnd):' "/proc/$pid/status" | tr '\t' ' ' | sed 's/^/proc: /'
  echo "watchdog_usec: $(show WatchdogUSec) last ping: $(show WatchdogTimestamp)"
  kill -STOP "$pid"
  echo "froze pid $pid at $(date +%T)"
  for _ in $(seq 40); do [ "$(show NRestarts)" -ge 1 ] && [ "$(show ActiveState)" = active ] && break; sleep 1; done
  echo "after freeze: $(show ActiveState)/$(show SubState) restarts=$(show NRestarts) new pid=$(show MainPID)"
  journalctl -u emotion-agent --no-pager -o cat | grep -Ei 'watchdog|ready|denied|operation not permitted|Traceback|Main process exited|Scheduled restart' | head -20
} >"$out" 2>&1
systemctl poweroff
EOF
chmod +x "$R/usr/local/sbin/ea-check"
printf '[Unit]\nAfter=emotion-agent.service\n[Service]\nType=oneshot\nExecStart=/usr/local/sbin/ea-check\n[Install]\nWantedBy=multi-user.target\n' \
    >"$R/etc/systemd/system/ea-check.service"
chroot "$R" systemctl enable -q ea-check.service
t0=$(date +%s)
timeout 300 systemd-nspawn -q -D "$R" --register=no --keep-unit -b >"$WORK/boot.log" 2>&1 || true
echo "booted, checked and powered off in $(($(date +%s) - t0)) s"
if [ ! -s "$R/root/result" ]; then
    echo "no result; boot log:"; tail -40 "$WORK/boot.log"; exit 1
fi
cat "$R/root/result"
echo "states received on the host: $(grep -c '/state ' "$WORK/received" || true)"
grep -q "^active: active/running type=notify" "$R/root/result"
grep -q "^proc: NoNewPrivs: 1" "$R/root/result"
grep -q "^proc: Seccomp: 2" "$R/root/result"
grep -q "^proc: CapEff: 0000000000000000" "$R/root/result"
grep -Eq "^user: emotion-agent groups: .*video" "$R/root/result"
grep -Eq "^user: emotion-agent groups: .*bluetooth" "$R/root/result"
grep -qi "watchdog timeout" "$R/root/result"
grep -Eq "^after freeze: active/running restarts=[1-9]" "$R/root/result"
grep -q '/state ' "$WORK/received"
echo "PASS: the hardened unit runs under systemd, and its watchdog restarts a frozen agent"
