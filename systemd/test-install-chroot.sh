#!/usr/bin/env bash
# End-to-end test of systemd/install.sh in a throwaway Debian bookworm root (needs root,
# mmdebstrap or a cached base, and network for apt/pip unless --wheels is given):
#
#   sudo systemd/test-install-chroot.sh [--arch amd64|arm64] [--wheels DIR]
#
# It installs a frozen copy of this checkout (or of $EMOTION_AGENT_SRC).
# 1. a fresh root from a cached bookworm base (built once with mmdebstrap into
#    $EMOTION_AGENT_CACHE, default /work/cache: outside the repository); listing L0
# 2. install.sh --root: apt packages, user, venv, project, config, unit enabled; listing L1
#    then checks: user and groups, unit enabled, check-config, numpy<2, doctor's model checks
# 3. the config is edited, install.sh runs again: listing L2 must equal L1 plus the edit
#    (idempotent: no file rewritten, config kept)
# 4. --uninstall keeps /etc/emotion-agent; --uninstall --purge then leaves nothing of ours:
#    every difference from L0 must belong to the apt packages the installer added (kept by
#    design) or to dpkg/apt bookkeeping, and nothing may mention emotion-agent.
# Durations of each step are printed. arm64 runs under qemu-user (binfmt_misc).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ARCH=amd64
WHEEL_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) ARCH=$2; shift 2 ;;
        --wheels) WHEEL_ARGS=(--wheels "$2" --offline); shift 2 ;;
        *) echo "usage: $0 [--arch amd64|arm64] [--wheels DIR]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "needs root (chroot, mount)" >&2; exit 2; }
CACHE=${EMOTION_AGENT_CACHE:-/work/cache}
BASE=$CACHE/bookworm-$ARCH-base.tar.zst
LIST="python3 $HERE/rootfs-listing.py"
step() { STEP_T0=$(date +%s.%N); printf '\n== %s\n' "$*"; }
took() { printf '   (%.1f s)\n' "$(echo "$(date +%s.%N) - $STEP_T0" | bc)"; }

if [ ! -f "$BASE" ]; then
    step "building the bookworm $ARCH base root once: $BASE"
    mkdir -p "$CACHE"
    mmdebstrap --architectures="$ARCH" --variant=minbase \
        --include=systemd,systemd-sysv,ca-certificates bookworm "$BASE" http://deb.debian.org/debian
    took
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ea-chroot.XXXXXX")
R=$WORK/root
# a frozen copy of the checkout: the runs must see the same sources (an edit in between
# would rightly trigger a reinstall)
mkdir "$WORK/src"
tar -C "${EMOTION_AGENT_SRC:-$HERE/..}" --exclude=.git --exclude=.venv --exclude='*.egg-info' --exclude=__pycache__ \
    --exclude=build --exclude=dist --exclude=.pytest_cache --exclude=.ruff_cache -cf - . |
    tar -C "$WORK/src" -xf -
INSTALL=$WORK/src/systemd/install.sh
cleanup() {
    for fs in proc sys dev; do mountpoint -q "$R/$fs" 2>/dev/null && umount -l "$R/$fs"; done
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir "$R"
tar -C "$R" --zstd -xpf "$BASE"
# this site's network settings, part of the baseline: DNS, and a TLS-inspecting proxy's CA
# (if the host trusts extra CAs, the root must too, and pip must use the system store)
cp /etc/resolv.conf "$R/etc/resolv.conf"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$R/usr/local/share/ca-certificates/"
    chroot "$R" update-ca-certificates >/dev/null
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$R/etc/pip.conf"
fi
in_root() { chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
in_root dpkg-query -W -f='${Package}\n' | sort >"$WORK/packages-0"
$LIST "$R" >"$WORK/L0"
echo "base root: $(wc -l <"$WORK/L0") paths"

step "refusal: an unsupported release must be refused before anything changes"
cp -a "$R/etc/os-release" "$WORK/os-release" # a link to ../usr/lib/os-release in Debian
sed 's/^VERSION_CODENAME=.*/VERSION_CODENAME=forky/' "$R/usr/lib/os-release" >"$WORK/forky"
rm "$R/etc/os-release" && cp "$WORK/forky" "$R/etc/os-release"
if "$INSTALL" --root "$R" "${WHEEL_ARGS[@]}" 2>"$WORK/refused"; then
    echo "FAIL: installed on forky" >&2
    exit 1
fi
cat "$WORK/refused"
grep -q "unsupported release 'forky'" "$WORK/refused"
rm "$R/etc/os-release" && cp -a "$WORK/os-release" "$R/etc/os-release"
$LIST "$R" >"$WORK/L0-refused"
[ -z "$(python3 "$HERE/rootfs-listing.py" --diff "$WORK/L0" "$WORK/L0-refused")" ] ||
    { echo "FAIL: the refused run changed the root" >&2; exit 1; }
echo "   refused, and nothing changed"

step "install (1st run)"
"$INSTALL" --root "$R" "${WHEEL_ARGS[@]}"
took
$LIST "$R" >"$WORK/L1"
echo "installed: $(python3 "$HERE/rootfs-listing.py" --diff "$WORK/L0" "$WORK/L1" | wc -l) paths differ from the base"

step "checks"
in_root id emotion-agent
in_root id -nG emotion-agent | tr ' ' '\n' | grep -qx video
in_root id -nG emotion-agent | tr ' ' '\n' | grep -qx bluetooth
test -L "$R/etc/systemd/system/multi-user.target.wants/emotion-agent.service"
in_root systemctl is-enabled emotion-agent.service
in_root env CREDENTIALS_DIRECTORY=/etc/emotion-agent \
    /opt/emotion-agent/venv/bin/emotion-agent check-config /etc/emotion-agent/config.yaml
in_root /opt/emotion-agent/venv/bin/python -c \
    'import numpy, tflite_runtime; assert numpy.__version__ < "2", numpy.__version__; print("numpy", numpy.__version__, "tflite-runtime", tflite_runtime.__version__)'
in_root env PYTHONDONTWRITEBYTECODE=1 /opt/emotion-agent/venv/bin/emotion-agent doctor --json \
    >"$WORK/doctor.json" || true # the broker or clock may legitimately fail here
python3 - "$WORK/doctor.json" <<'EOF'
import json, sys
checks = {c["name"]: c for c in json.load(open(sys.argv[1]))["checks"]}
for name in ("config", "face detector model", "expression model", "numpy", "runtime"):
    assert checks[name]["status"] == "ok", checks[name]
    print(f"   doctor: {name}: ok ({checks[name]['detail'][:70]})")
EOF
in_root stat -c '   %A %U:%G %n' /etc/emotion-agent /etc/emotion-agent/config.yaml \
    /etc/emotion-agent/mqtt_password

echo "# edited by the test" >>"$R/etc/emotion-agent/config.yaml"
$LIST "$R" >"$WORK/L1-edited"

step "install (2nd run: must change nothing, keep the edited config)"
"$INSTALL" --root "$R" "${WHEEL_ARGS[@]}"
took
$LIST "$R" >"$WORK/L2"
changes=$(python3 "$HERE/rootfs-listing.py" --diff "$WORK/L1-edited" "$WORK/L2")
if [ -n "$changes" ]; then echo "NOT IDEMPOTENT:"; echo "$changes"; exit 1; fi
grep -q "edited by the test" "$R/etc/emotion-agent/config.yaml"
echo "   idempotent: 0 paths changed; config kept"

step "uninstall (keeps config and state)"
"$INSTALL" --root "$R" --uninstall
took
test -d "$R/etc/emotion-agent" && test ! -e "$R/opt/emotion-agent"
if in_root id emotion-agent 2>/dev/null; then echo "FAIL: the user is still there" >&2; exit 1; fi

step "uninstall --purge"
"$INSTALL" --root "$R" --uninstall --purge
took
$LIST "$R" >"$WORK/L3"
in_root dpkg-query -W -f='${Package}\n' | sort >"$WORK/packages-3"
comm -13 "$WORK/packages-0" "$WORK/packages-3" >"$WORK/new-packages"
echo "apt packages added (kept by design): $(wc -l <"$WORK/new-packages")"
# every path the new packages own (dpkg -L), as an allow-list
xargs -a "$WORK/new-packages" chroot "$R" dpkg -L 2>/dev/null | sort -u >"$WORK/owned"
python3 "$HERE/rootfs-listing.py" --diff "$WORK/L0" "$WORK/L3" >"$WORK/D3"
python3 - "$WORK/D3" "$WORK/owned" "$R" <<'EOF'
import os, re, sys
diff, root = open(sys.argv[1]).read().splitlines(), sys.argv[3]
# dpkg -L names /lib, /bin, /sbin; on a merged-/usr root those are /usr/lib, /usr/bin ...
MERGED = re.compile(r"^/(lib|lib64|bin|sbin)/")
owned = {MERGED.sub(r"/usr/\1/", p) for p in open(sys.argv[2]).read().split()}
# dpkg/apt/debconf bookkeeping, logs and caches; files maintainer scripts of the new
# packages create (accounts for dbus/bluez, their enablement links, ld.so and machine ids)
BOOKKEEPING = re.compile(
    r"^/(var/lib/(dpkg|apt|ucf|systemd/deb-systemd-|dbus|bluetooth)|var/cache/|var/log/"
    r"|etc/(passwd|group|shadow|gshadow)-?$|etc/ld\.so\.cache$|etc/systemd/system/"
    r"|etc/(python3|dbus-1|bluetooth|alternatives|ca-certificates|ssl|machine-id|modules$)"
    r"|etc/rc.\.d/|etc/inputrc$|usr/lib/udev/hwdb\.bin$|usr/share/man/|var/lib/python(/|$)"
    r"|usr/local/lib/python3)"
)
# byte code that the packages' postinst (py3compile) writes beside their own sources
PYC = re.compile(r"^(.*)/__pycache__(/([^/.]+)\.[^/]*\.pyc)?$")


def compiled_from_owned(path: str) -> bool:
    m = PYC.match(path)
    if not m:
        return False
    return m.group(1) in owned if not m.group(3) else f"{m.group(1)}/{m.group(3)}.py" in owned
unexplained, bookkept = [], 0
for line in diff:
    path = line[2:].split("\t", 1)[0]
    if "emotion-agent" in path or "emotion_agent" in path:
        unexplained.append(line)
    elif path in owned or compiled_from_owned(path):
        continue
    elif BOOKKEEPING.match(path):
        bookkept += 1
    else:
        unexplained.append(line)
for f in ("passwd", "group", "shadow", "gshadow"):
    if "emotion-agent" in open(os.path.join(root, "etc", f)).read():
        unexplained.append(f"/etc/{f} still names emotion-agent")
print(f"   differences from the base root: {len(diff)}; owned by the added apt packages: "
      f"{sum(1 for l in diff if l[2:].split(chr(9))[0] in owned)}; dpkg/apt bookkeeping: {bookkept}")
if unexplained:
    print("LEFT BEHIND:\n" + "\n".join(unexplained))
    sys.exit(1)
print("   nothing of emotion-agent left behind")
EOF
echo
echo "PASS: install, idempotent reinstall, uninstall, purge ($ARCH)"
