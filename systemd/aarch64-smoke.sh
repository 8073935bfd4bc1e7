#!/usr/bin/env bash
# The Pi install, proven without a Pi: a Debian arm64 root run under qemu-user.
#
#   sudo systemd/aarch64-smoke.sh            bookworm: Python 3.11, tflite-runtime
#   sudo EMOTION_AGENT_RELEASE=trixie systemd/aarch64-smoke.sh
#                                            trixie: Python 3.13, numpy 2, ai-edge-litert
#   (about 6-7 min here once cached, 2 cores; see docs/pi.md)
#
# QEMU_CPU (default: qemu's own) picks the emulated CPU, e.g. QEMU_CPU=cortex-a72 for a
# Pi 4, cortex-a76 for a Pi 5.
#
# Needs root, mmdebstrap, arch-test, qemu-user-static and binfmt-support (apt install mmdebstrap arch-test
# qemu-user-static binfmt-support), network for apt, and mosquitto on the host.
# Cached outside the repository in $EMOTION_AGENT_CACHE (default /work/cache): the arm64
# base root (mmdebstrap, once) and the aarch64 wheels (pip download, once).
#
# 1. wheels: the project's own wheel, then its pinned dependencies for cp311 aarch64,
#    resolved from that wheel's metadata (no second list of requirements)
# 2. a fresh arm64 root; systemd/install.sh --root ROOT --wheels DIR in it: apt packages,
#    user, venv, offline pip install, config, unit enabled
# 3. the smoke test, inside the root under emulation, as the service user:
#    check-config; both shipped models loaded with tflite-runtime and run once, then
#    `emotion-agent faces` on a photograph (outputs compared with this host's for the
#    same inputs); HRV of the demo session's RR
#    (compared with this host); `emotion-agent demo` publishing to a Mosquitto on this
#    host's loopback (qemu-user shares the network), received by mosquitto_sub here;
#    `emotion-agent doctor` against that broker.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=$(cd "${EMOTION_AGENT_SRC:-$HERE/..}" && pwd) # the checkout to install (default: this one)
CACHE=${EMOTION_AGENT_CACHE:-/work/cache}
RELEASE=${EMOTION_AGENT_RELEASE:-bookworm}
case "$RELEASE" in
    bookworm) PYV=3.11 RUNTIME=tflite-runtime RUNTIME_MODULE=tflite_runtime ;;
    trixie) PYV=3.13 RUNTIME=ai-edge-litert RUNTIME_MODULE=ai_edge_litert ;;
    *) echo "EMOTION_AGENT_RELEASE must be bookworm or trixie, not $RELEASE" >&2; exit 2 ;;
esac
ABI=cp${PYV/./}
BASE=$CACHE/$RELEASE-arm64-base.tar.zst
WHEELS=$CACHE/aarch64-wheels-$RELEASE
HOST_PY=${PYTHON:-$HERE/../.venv/bin/python}
T_START=$(date +%s.%N)
step() { STEP_T0=$(date +%s.%N); printf '\n== %s\n' "$*"; }
took() { printf '   (%.1f s)\n' "$(echo "$(date +%s.%N) - $STEP_T0" | bc)"; }

[ "$(id -u)" = 0 ] || { echo "needs root (chroot, mount, binfmt_misc)" >&2; exit 2; }
for tool in mmdebstrap arch-test qemu-aarch64-static update-binfmts mosquitto mosquitto_sub bc zstd; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || {
        echo "missing $tool: apt install mmdebstrap arch-test qemu-user-static binfmt-support mosquitto mosquitto-clients bc zstd" >&2
        exit 2
    }
done
"$HOST_PY" -c "import $RUNTIME_MODULE" 2>/dev/null || {
    echo "$HOST_PY lacks $RUNTIME (set PYTHON= to the project venv's python)" >&2
    exit 2
}

step "binfmt_misc: run aarch64 binaries through qemu-aarch64-static"
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-aarch64 2>/dev/null || true
grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 || { echo "qemu-aarch64 binfmt not enabled" >&2; exit 1; }
took

[ -d "$BASE" ] && rm -rf "$BASE" # left by the old bug: a directory under the tarball's name
if [ ! -s "$BASE" ]; then
    step "building the $RELEASE arm64 base root once: $BASE"
    mkdir -p "$CACHE"
    # mmdebstrap picks its output format from the name: the partial file must end in
    # .tar.zst too (a bare "$BASE.part" made it write a directory that tar could not read)
    rm -rf "$BASE.part.tar.zst" "$BASE.part"
    mmdebstrap --architectures=arm64 --variant=minbase --format=tar \
        --include=systemd,systemd-sysv,ca-certificates "$RELEASE" "$BASE.part.tar.zst" http://deb.debian.org/debian
    mv "$BASE.part.tar.zst" "$BASE"
    took
fi

step "wheels for $ABI aarch64 (project wheel + pinned dependencies) in $WHEELS"
mkdir -p "$WHEELS"
rm -f "$WHEELS"/emotion_agent-*.whl
build=$(mktemp -d)
tar -C "$SRC" --exclude=.git --exclude=.venv --exclude='*.egg-info' --exclude=build \
    --exclude=__pycache__ -cf - . | tar -C "$build" -xf -
"$HOST_PY" -m pip wheel -q --no-deps -w "$WHEELS" "$build"
rm -rf "$build"
# pip evaluates the project's environment markers with the interpreter it runs in, so the
# dependencies are resolved by a Python of the target's version (pyenv has one here)
is_py() { "$1" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$PYV'.split('.'))))" 2>/dev/null; }
DL_PY=""
for c in "$HOST_PY" "python$PYV" "$(pyenv root 2>/dev/null || echo /root/.pyenv)"/versions/"$PYV"*/bin/python3; do
    if command -v "$c" >/dev/null 2>&1 && is_py "$c"; then DL_PY=$(command -v "$c"); break; fi
done
[ -n "$DL_PY" ] || { echo "no Python $PYV on this host to resolve the $RELEASE wheels" >&2; exit 2; }
# every manylinux tag the target's glibc accepts (bookworm 2.36, trixie 2.41): pip only
# takes wheels whose tag is listed (ai-edge-litert's aarch64 wheels are manylinux_2_27)
GLIBC_MAX=$([ "$RELEASE" = trixie ] && echo 41 || echo 36)
PLATFORMS=()
for minor in $(seq 17 "$GLIBC_MAX"); do PLATFORMS+=(--platform "manylinux_2_${minor}_aarch64"); done
"$DL_PY" -m pip download -q --dest "$WHEELS" --only-binary=:all: --python-version "$PYV" \
    --implementation cp --abi "$ABI" "${PLATFORMS[@]}" --platform manylinux2014_aarch64 \
    "$WHEELS"/emotion_agent-*.whl
ls "$WHEELS" | sed 's/^/   /'
took

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ea-arm64.XXXXXX")
R=$WORK/root
BROKER_PID=""
cleanup() {
    [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null
    for fs in proc sys dev; do mountpoint -q "$R/$fs" 2>/dev/null && umount -l "$R/$fs"; done
    rm -rf "$WORK"
}
trap cleanup EXIT

step "fresh arm64 root from the cached base"
mkdir "$R"
tar -C "$R" --zstd -xpf "$BASE"
cp /etc/resolv.conf "$R/etc/resolv.conf" # apt (plain http); pip is offline (--wheels)
chroot "$R" uname -m | grep -qx aarch64
chroot "$R" dpkg --print-architecture
took

step "systemd/install.sh --root ROOT --wheels DIR (under emulation)"
"$HERE/install.sh" --root "$R" --wheels "$WHEELS"
took

# -- the smoke test ------------------------------------------------------------------------
PORT=$("$HOST_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$PORT" >"$WORK/mosquitto.conf"
mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
BROKER_PID=$!
mkdir -p "$R/srv/smoke"
printf 'device: {name: arm64-smoke}\nmqtt: {broker: "mqtt://127.0.0.1:%s"}\n' "$PORT" >"$R/srv/smoke/config.yaml"
# the RR of the bundled synthetic session, one interval per row
"$HOST_PY" - "$SRC/agent/sessions/synthetic/heart.csv" "$R/srv/smoke/rr.csv" <<'EOF'
import csv, sys
rows = csv.DictReader(open(sys.argv[1]))
rr = [v for row in rows for v in (row["rr_ms"] or "").split()]
open(sys.argv[2], "w").write("\n".join(rr) + "\n")
EOF
cat >"$R/srv/smoke/models.py" <<'EOF'
# Load both shipped models with the runtime named in argv[1], run each once, print JSON.
import json, sys
import numpy as np
from agent.config import ModelsConfig
from agent.runtime import expression_model_path, face_detector_path
from agent.vision.interpreter import load_model

m, out = ModelsConfig(), {}
for path in (face_detector_path(m), expression_model_path(m)):
    model = load_model(path, runtime=sys.argv[1])
    d = model.input
    rng = np.random.default_rng(0)
    x = (rng.integers(-128, 128, d.shape) if d.dtype.kind == "i" else rng.random(d.shape) * 2 - 1).astype(d.dtype)
    y = model.run(x)
    out[path.name] = {"runtime": f"{model.runtime} {model.runtime_version}",
                      "sha256": model.sha256[:16], "outputs": [v.astype(float).ravel()[:64].tolist() for v in y]}
json.dump(out, sys.stdout)
EOF
chmod -R a+rX "$R/srv/smoke"
# the API file systems, as on a booted Pi (XNNPACK's cpuinfo reads /sys/devices/system/cpu)
# On trixie without /sys: under qemu-user /proc/cpuinfo and /sys describe the x86 host, and
# ai-edge-litert's cpuinfo initialisation segfaults when it can read both (measured: with
# only one of them, or neither, every model runs, under every QEMU_CPU tried, with and
# without XNNPACK). A real Pi describes its own ARM cores in both.
MOUNTS="proc sys dev"
[ "$RELEASE" = trixie ] && MOUNTS="proc dev"
for fs in $MOUNTS; do
    case $fs in
        proc) mount -t proc proc "$R/proc" ;;
        sys) mount -t sysfs sys "$R/sys" ;;
        dev) mount --bind /dev "$R/dev" ;;
    esac
done
as_agent() {
    chroot --userspec=emotion-agent:emotion-agent "$R" /usr/bin/env -i PATH=/usr/bin:/bin \
        HOME=/tmp LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 ${QEMU_CPU:+QEMU_CPU=$QEMU_CPU} "$@"
}
EA=/opt/emotion-agent/venv/bin/emotion-agent

step "smoke: check-config (service user, aarch64)"
as_agent $EA --version
as_agent python3 -c 'import platform; print("   machine:", platform.machine())'
as_agent $EA check-config /etc/emotion-agent/config.yaml
as_agent $EA check-config /srv/smoke/config.yaml
took

step "smoke: both models with $RUNTIME, once; then on a photo; compared with this host"
as_agent /opt/emotion-agent/venv/bin/python /srv/smoke/models.py "$RUNTIME" 2>"$WORK/models-arm64.err" >"$WORK/models-arm64.json" ||
    { echo "the models failed on aarch64:" >&2; tail -20 "$WORK/models-arm64.err" >&2; exit 1; }
(cd "$SRC" && PYTHONPATH=$SRC "$HOST_PY" "$R/srv/smoke/models.py" "$RUNTIME" 2>/dev/null) >"$WORK/models-host.json"
"$HOST_PY" - "$WORK/models-arm64.json" "$WORK/models-host.json" <<'EOF'
import json, sys
import numpy as np
arm, host = (json.load(open(p)) for p in sys.argv[1:3])
assert arm.keys() == host.keys() and len(arm) == 2, (arm.keys(), host.keys())
for name in arm:
    worst = max(float(np.max(np.abs(np.subtract(a, h)))) for a, h in zip(arm[name]["outputs"], host[name]["outputs"]))
    int8 = "int8" in name
    print(f"   {name}: {arm[name]['runtime']} on aarch64, sha256 {arm[name]['sha256']}..., "
          f"max |aarch64 - x86_64| on a noise input = {worst:.2g}{' int8 steps' if int8 else ''}")
    # float: same numbers; int8: XNNPACK's requantization rounds differently on ARM and x86,
    # which a full-scale noise input amplifies; the photo below is the meaningful comparison
    assert int8 or worst < 1e-3, f"{name}: float outputs differ by {worst}"
EOF

# the agent's own pipeline on a real photograph (scikit-image's astronaut), both machines
if "$HOST_PY" - "$R/srv/smoke/astronaut.ppm" <<'EOF'
import sys
from skimage import data
a = data.astronaut()
open(sys.argv[1], "wb").write(b"P6\n%d %d\n255\n" % (a.shape[1], a.shape[0]) + a.tobytes())
EOF
then
    printf 'models: {runtime: %s}\n' "$RUNTIME" >"$R/srv/smoke/tflite.yaml"
    chmod a+r "$R/srv/smoke/astronaut.ppm" "$R/srv/smoke/tflite.yaml"
    as_agent $EA faces -c /srv/smoke/tflite.yaml /srv/smoke/astronaut.ppm >"$WORK/faces-arm64.json"
    (cd "$SRC" && PYTHONPATH=$SRC "$HOST_PY" -m agent faces -c "$R/srv/smoke/tflite.yaml" \
        "$R/srv/smoke/astronaut.ppm") >"$WORK/faces-host.json"
    "$HOST_PY" - "$WORK/faces-arm64.json" "$WORK/faces-host.json" <<'EOF'
import json, sys
arm, host = (json.load(open(p))[0]["faces"] for p in sys.argv[1:3])
assert len(arm) == len(host) >= 1, (len(arm), len(host))
for a, h in zip(arm, host):
    box = max(abs(x - y) for x, y in zip(a["box"], h["box"]))
    pa, ph = a["expression"], h["expression"]
    prob = max(abs(pa[k] - ph[k]) for k in pa)
    ta, th = max(pa, key=pa.get), max(ph, key=ph.get)
    print(f"   photo: face at {a['box']} on aarch64, box within {box:.2g} px of x86_64; "
          f"expression {ta} {pa[ta]:.3f} (x86_64: {th} {ph[th]:.3f}), "
          f"max probability difference {prob:.3f}")
    assert box <= 1.0 and ta == th and prob <= 0.05
EOF
else
    echo "   (no scikit-image on this host: the photo comparison is skipped)"
fi
took

step "smoke: HRV of the synthetic session's RR, compared with this host"
as_agent $EA analyze --rr /srv/smoke/rr.csv >"$WORK/hrv-arm64.json"
(cd "$SRC" && PYTHONPATH=$SRC "$HOST_PY" -m agent analyze --rr "$R/srv/smoke/rr.csv") >"$WORK/hrv-host.json"
"$HOST_PY" - "$WORK/hrv-arm64.json" "$WORK/hrv-host.json" <<'EOF'
import json, math, sys
arm, host = (json.load(open(p)) for p in sys.argv[1:3])
def flat(d, pre=""):
    items = d.items() if isinstance(d, dict) else enumerate(d)
    for k, v in items:
        if isinstance(v, (dict, list)):
            yield from flat(v, f"{pre}{k}.")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield f"{pre}{k}", float(v)
a, h = dict(flat(arm)), dict(flat(host))
assert a.keys() == h.keys() and a, "different HRV keys"
bad = [k for k in a if not (math.isclose(a[k], h[k], rel_tol=1e-6, abs_tol=1e-9) or (math.isnan(a[k]) and math.isnan(h[k])))]
show = {k: round(v, 2) for k, v in a.items() if k.split(".")[-1] in ("rmssd", "sdnn", "mean_hr", "lf_hf")}
print(f"   {len(a)} numbers, equal to this host's within 1e-6: {not bad}; {show}")
assert not bad, bad
EOF
took

step "smoke: emotion-agent demo publishing to Mosquitto on the host's loopback (port $PORT)"
timeout 120 mosquitto_sub -p "$PORT" -t 'emotion-agent/demo/state' -C 3 -W 110 >"$WORK/received" &
SUB=$!
sleep 1
as_agent $EA --log-level warning demo --broker "mqtt://127.0.0.1:$PORT" --speed 60 --duration 60 \
    --state-dir /tmp/demo-state >"$WORK/demo.out"
wait "$SUB" || { echo "the host's subscriber did not get 3 state messages" >&2; cat "$WORK/demo.out" >&2; exit 1; }
echo "   published by the aarch64 agent: $(grep -c ' {' "$WORK/demo.out") message(s); received on the host: $(wc -l <"$WORK/received") state(s)"
head -c 300 "$WORK/received"; echo
took

step "smoke: emotion-agent doctor (aarch64) against that broker"
as_agent $EA doctor -c /srv/smoke/config.yaml --json >"$WORK/doctor.json" || true
"$HOST_PY" - "$WORK/doctor.json" <<'EOF'
import json, sys
checks = {c["name"]: c for c in json.load(open(sys.argv[1]))["checks"]}
for name in ("python", "numpy", "runtime", "face detector model", "expression model", "broker"):
    c = checks[name]
    print(f"   {c['status']:<4} {name}: {c['detail'][:90]}")
    assert c["status"] == "ok", c
EOF
took

printf '\nPASS: %s aarch64 install + smoke test (Python %s, %s) in %.0f s\n' "$RELEASE" "$PYV" "$RUNTIME" "$(echo "$(date +%s.%N) - $T_START" | bc)"
