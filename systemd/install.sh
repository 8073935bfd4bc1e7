#!/usr/bin/env bash
# Install, upgrade or remove emotion-agent as a systemd service.
#
#   sudo systemd/install.sh                      install or upgrade from this checkout
#   sudo systemd/install.sh --wheels DIR         install from a folder of wheels (offline)
#   sudo systemd/install.sh --config FILE        first install: use FILE as the configuration
#   sudo systemd/install.sh --uninstall          remove unit, venv and user; keep config + state
#   sudo systemd/install.sh --uninstall --purge  remove /etc/emotion-agent and /var/lib/emotion-agent too
#   sudo systemd/install.sh --root DIR ...       do any of the above inside the root DIR (chroot)
#
# Supported: Raspberry Pi OS 64-bit (arm64) or Debian (arm64; amd64 for testing), release
# bookworm (Debian 12, Python 3.11: numpy<2 and tflite-runtime) or trixie (Debian 13,
# Python 3.13: numpy 2 and ai-edge-litert; Raspberry Pi OS since 2025-10), with systemd.
# Anything else is refused before any change. The apt package names below are the same on
# both releases; pyproject's environment markers pick the Python packages for each.
#
# Idempotent: a second run with the same sources changes nothing (no file is rewritten
# unless its content differs; the venv is only re-installed when the sources changed).
# Kept on upgrade: /etc/emotion-agent/config.yaml and mqtt_password, the state in
# /var/lib/emotion-agent. apt packages are never removed (other software may use them).
#
# What it does: apt packages (python3-venv, bluez, python3-picamera2 where the archive has
# it), the system user emotion-agent (groups video, bluetooth), a venv with
# --system-site-packages at /opt/emotion-agent/venv (picamera2 comes from apt), the project
# and its pinned dependencies, the models (inside the venv, where the agent finds them),
# /etc/emotion-agent/{config.yaml,mqtt_password}, the unit in /etc/systemd/system, enabled,
# and started when systemd runs (PID 1); in a chroot it is enabled only.
set -euo pipefail

PREFIX=/opt/emotion-agent
VENV=$PREFIX/venv
ETC=/etc/emotion-agent
STATE=/var/lib/emotion-agent
UNIT=emotion-agent.service
UNIT_DIR=/etc/systemd/system
USER_NAME=emotion-agent
STAMP=$VENV/.emotion-agent-source.sha256
APT_PACKAGES=(python3 python3-venv bluez ca-certificates)
APT_OPTIONAL=(python3-picamera2)

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHEELS=""
CONFIG=""
ROOT=""
MODE=install
PURGE=0
OFFLINE=0
NO_START=0
CHANGED=0 # set when a file the running service uses was (re)written: restart it then

say() { printf 'emotion-agent install: %s\n' "$*"; }
die() { printf 'emotion-agent install: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

args=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) WHEELS=$(cd "${2:?--wheels needs a folder}" && pwd); shift 2 ;;
        --config) CONFIG=$(realpath "${2:?--config needs a file}"); shift 2 ;;
        --root) ROOT=$(realpath "${2:?--root needs a folder}"); shift 2 ;;
        --offline) OFFLINE=1; shift ;;
        --no-start) NO_START=1; shift ;;
        --uninstall) MODE=uninstall; shift ;;
        --purge) PURGE=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "unknown option: $1" >&2; usage 2 ;;
    esac
done
[ "$PURGE" = 0 ] || [ "$MODE" = uninstall ] || die "--purge goes with --uninstall"
[ "$(id -u)" = 0 ] || die "run as root (sudo $0 ${args[*]})"

# -- --root DIR: copy what is needed into DIR, run this script there with chroot ----------
if [ -n "$ROOT" ]; then
    [ -x "$ROOT/bin/sh" ] || die "$ROOT does not look like a root file system (no /bin/sh)"
    stage=$(mktemp -d "$ROOT/tmp/emotion-agent-install.XXXXXX")
    mounted=()
    cleanup() {
        local i
        for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" || true; done
        rm -rf "$stage"
    }
    trap cleanup EXIT
    # the sources (not .git, venvs or caches), wheels and config travel into the root
    tar -C "$SRC" --exclude=.git --exclude=.venv --exclude='*.egg-info' --exclude=__pycache__ \
        --exclude=build --exclude=dist --exclude=.pytest_cache --exclude=.ruff_cache \
        -cf - . | tar -C "$stage" -xf -
    inner=(--no-start)
    [ "$MODE" = uninstall ] && inner+=(--uninstall)
    [ "$PURGE" = 1 ] && inner+=(--purge)
    [ "$OFFLINE" = 1 ] && inner+=(--offline)
    if [ -n "$WHEELS" ]; then cp -r "$WHEELS" "$stage/.wheels"; inner+=(--wheels "${stage#"$ROOT"}/.wheels"); fi
    if [ -n "$CONFIG" ]; then cp "$CONFIG" "$stage/.config.yaml"; inner+=(--config "${stage#"$ROOT"}/.config.yaml"); fi
    for fs in proc sys dev; do
        if ! mountpoint -q "$ROOT/$fs"; then
            case $fs in
                proc) mount -t proc proc "$ROOT/proc" ;;
                sys) mount -t sysfs sys "$ROOT/sys" ;;
                dev) mount --bind /dev "$ROOT/dev" ;;
            esac
            mounted+=("$ROOT/$fs")
        fi
    done
    chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        /bin/bash "${stage#"$ROOT"}/systemd/install.sh" "${inner[@]}"
    exit $?
fi

export DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

systemd_running() { [ -d /run/systemd/system ] && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
# install -m MODE -o OWNER -g GROUP SRC DST, but only when DST differs (keeps reruns no-ops)
put() {
    local mode=$1 owner=$2 src=$3 dst=$4
    if ! cmp -s "$src" "$dst" 2>/dev/null; then
        install -D -m "$mode" -o "${owner%:*}" -g "${owner#*:}" "$src" "$dst"
        say "wrote $dst"
        CHANGED=1
    else
        chmod "$mode" "$dst"
        chown "$owner" "$dst"
    fi
}

# -- refuse an unsupported system before changing anything -------------------------------
preflight() {
    local id codename arch
    [ -r /etc/os-release ] || die "no /etc/os-release: not Raspberry Pi OS or Debian"
    id=$(. /etc/os-release && echo "${ID:-}")
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    case "$id" in debian | raspbian) ;; *) die "unsupported OS '$id': needs Raspberry Pi OS or Debian (bookworm or trixie)" ;; esac
    local want_py
    case "$codename" in
        bookworm) want_py=3.11 ;;
        trixie) want_py=3.13 ;;
        *) die "unsupported release '$codename': needs bookworm (Debian 12) or trixie (Debian 13 / Raspberry Pi OS 2025-10 or later)" ;;
    esac
    command -v dpkg >/dev/null || die "no dpkg: not a Debian system"
    arch=$(dpkg --print-architecture)
    case "$arch" in
        arm64 | amd64) ;;
        armhf) die "32-bit Raspberry Pi OS (armhf) is not supported: install Raspberry Pi OS 64-bit (arm64)" ;;
        *) die "unsupported architecture '$arch': needs arm64 (a Pi 4 or 5 with 64-bit OS), or amd64 for testing" ;;
    esac
    if command -v python3 >/dev/null; then
        [ "$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$want_py" ] ||
            die "python3 is $(python3 -V 2>&1 | cut -d' ' -f2); $codename's $want_py is required"
    fi
    [ -x /bin/systemctl ] || [ -x /usr/bin/systemctl ] || die "no systemctl: systemd is required"
    if [ "$MODE" = install ]; then
        if [ -n "$WHEELS" ]; then
            compgen -G "$WHEELS/emotion_agent-*.whl" >/dev/null || die "no emotion_agent-*.whl in $WHEELS"
        else
            [ -f "$SRC/pyproject.toml" ] && [ -d "$SRC/agent" ] || die "$SRC is not an emotion-agent checkout (use --wheels DIR)"
        fi
        [ -f "$SRC/systemd/$UNIT" ] || die "missing $SRC/systemd/$UNIT"
        [ -z "$CONFIG" ] || [ -f "$CONFIG" ] || die "no such config file: $CONFIG"
        [ -n "$CONFIG" ] || [ -f "$SRC/config/example.yaml" ] || [ -f "$ETC/config.yaml" ] ||
            die "no configuration: pass --config FILE"
    fi
}

apt_install() {
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
    for p in "${APT_OPTIONAL[@]}"; do
        installed "$p" && continue
        if [ -n "$(apt-cache policy "$p" 2>/dev/null | sed -n 's/^ *Candidate: //p' | grep -v '(none)')" ]; then
            missing+=("$p")
        else
            say "$p is not in this system's archive (not Raspberry Pi OS?): the picamera2 camera backend will be unavailable"
        fi
    done
    [ ${#missing[@]} -eq 0 ] && { say "apt packages present"; return; }
    say "apt install ${missing[*]}"
    [ "$OFFLINE" = 1 ] || apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_user() {
    if ! id "$USER_NAME" >/dev/null 2>&1; then
        useradd --system --user-group --home-dir "$STATE" --no-create-home \
            --shell /usr/sbin/nologin --comment "emotion-agent service" "$USER_NAME"
        say "created system user $USER_NAME"
    fi
    local g
    for g in video bluetooth; do
        getent group "$g" >/dev/null || groupadd --system "$g"
        id -nG "$USER_NAME" | tr ' ' '\n' | grep -qx "$g" || { usermod -aG "$g" "$USER_NAME"; say "added $USER_NAME to group $g"; }
    done
}

# A digest of what would be installed: the wheels, or the checkout's package sources.
source_digest() {
    if [ -n "$WHEELS" ]; then
        (cd "$WHEELS" && sha256sum ./*.whl)
    else
        (cd "$SRC" && find agent models pyproject.toml README.md NOTICE.md docs -type f \
            ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    fi | sha256sum | cut -d' ' -f1
}

install_venv() {
    local digest
    digest=$(source_digest)
    [ -x "$VENV/bin/python" ] || { python3 -m venv --system-site-packages "$VENV"; say "created $VENV"; }
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$digest" ] && "$VENV/bin/python" -m pip check >/dev/null 2>&1; then
        say "venv up to date (sources unchanged)"
        return
    fi
    say "installing the project and its pinned dependencies into $VENV"
    if [ -n "$WHEELS" ]; then
        "$VENV/bin/pip" install -q --no-index --find-links "$WHEELS" emotion-agent
    else
        [ "$OFFLINE" = 0 ] || die "--offline needs --wheels DIR"
        # build from a copy: setuptools writes build/ and *.egg-info into the source tree
        local tmp
        tmp=$(mktemp -d)
        tar -C "$SRC" --exclude=.git --exclude=.venv --exclude='*.egg-info' --exclude=build \
            -cf - . | tar -C "$tmp" -xf -
        "$VENV/bin/pip" install -q "$tmp" || { rm -rf "$tmp"; die "pip install failed"; }
        rm -rf "$tmp"
    fi
    "$VENV/bin/python" -m pip check
    echo "$digest" >"$STAMP"
    CHANGED=1
    [ -f "$SRC/README.md" ] && put 0644 root:root "$SRC/README.md" "$PREFIX/README.md"
    local doc
    for doc in "$SRC"/docs/*.md "$SRC/NOTICE.md"; do
        [ -f "$doc" ] || continue
        [ "$doc" = "$SRC/NOTICE.md" ] && { put 0644 root:root "$doc" "$PREFIX/NOTICE.md"; continue; }
        install -d -m 0755 "$PREFIX/docs"
        put 0644 root:root "$doc" "$PREFIX/docs/$(basename "$doc")"
    done
}

install_config() {
    install -d -m 0750 -o root -g "$USER_NAME" "$ETC"
    if [ -f "$ETC/config.yaml" ]; then
        say "keeping $ETC/config.yaml"
    else
        install -m 0640 -o root -g "$USER_NAME" "${CONFIG:-$SRC/config/example.yaml}" "$ETC/config.yaml"
        CHANGED=1
        say "installed $ETC/config.yaml: edit broker, device name and consent, then: systemctl restart $UNIT"
    fi
    if [ ! -e "$ETC/mqtt_password" ]; then
        # LoadCredential= needs the file; empty = no password (set `password: {credential: mqtt_password}`)
        install -m 0600 -o root -g root /dev/null "$ETC/mqtt_password"
        say "created an empty $ETC/mqtt_password (the broker password, read as a systemd credential)"
    fi
    if ! "$VENV/bin/emotion-agent" check-config "$ETC/config.yaml" >/dev/null 2>&1; then
        # a {credential: ...} secret is only there under systemd: check with it in place
        CREDENTIALS_DIRECTORY=$ETC "$VENV/bin/emotion-agent" check-config "$ETC/config.yaml" ||
            die "$ETC/config.yaml does not validate (see above)"
    fi
}

install_unit() {
    put 0644 root:root "$SRC/systemd/$UNIT" "$UNIT_DIR/$UNIT"
    if systemd_running; then
        systemctl daemon-reload
        systemctl enable -q "$UNIT"
        if [ "$NO_START" = 1 ]; then
            say "enabled $UNIT (not started: --no-start)"
        elif [ "$CHANGED" = 1 ] || ! systemctl is-active -q "$UNIT"; then
            systemctl restart "$UNIT"
            say "(re)started $UNIT: systemctl status $UNIT; journalctl -u $UNIT -f"
        else
            say "$UNIT running, nothing changed: not restarted"
        fi
    else
        systemctl enable -q "$UNIT" 2>/dev/null || systemctl --root=/ enable -q "$UNIT"
        say "systemd is not running here (chroot or container): $UNIT enabled, not started"
    fi
}

uninstall() {
    if [ -f "$UNIT_DIR/$UNIT" ]; then
        if systemd_running; then
            systemctl disable -q --now "$UNIT" || true
        else
            systemctl disable -q "$UNIT" 2>/dev/null || systemctl --root=/ disable -q "$UNIT" || true
        fi
        rm -f "$UNIT_DIR/$UNIT"
        systemd_running && systemctl daemon-reload
        say "removed $UNIT_DIR/$UNIT"
    fi
    if [ -d "$PREFIX" ]; then rm -rf "$PREFIX"; say "removed $PREFIX"; fi
    if id "$USER_NAME" >/dev/null 2>&1; then userdel "$USER_NAME"; say "removed user $USER_NAME"; fi
    getent group "$USER_NAME" >/dev/null && groupdel "$USER_NAME"
    if [ "$PURGE" = 1 ]; then
        rm -rf "$ETC" "$STATE" "$UNIT_DIR/$UNIT.d"
        say "purged $ETC, $STATE and any drop-ins"
    else
        for d in "$ETC" "$STATE"; do [ -e "$d" ] && say "kept $d (remove with --uninstall --purge)"; done
    fi
    say "apt packages were left installed"
}

preflight
if [ "$MODE" = uninstall ]; then
    uninstall
    exit 0
fi
apt_install
ensure_user
install_venv
install_config
install_unit
say "done: $("$VENV/bin/emotion-agent" --version); check this machine: $VENV/bin/emotion-agent doctor"
