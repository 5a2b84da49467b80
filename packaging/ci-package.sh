#!/usr/bin/env bash
# CI for the Debian packages (run by .ci/run after the tests, as root on a Debian 12 machine):
#  1. installs what it needs (apt-get: cross gcc, libclang for the armhf bindgen, qemu-user-static,
#     systemd for systemd-analyze;
#     rustup targets; cargo-deb);
#  2. builds the host (amd64) package, and the shipped arm64 and armhf packages (profile dist);
#  3. checks every package with dpkg-deb --info/--contents (files, modes, conffiles, scripts);
#  4. reports size and dependencies of the Arm binaries and checks their glibc floor against Depends;
#  5. runs the arm64 binary under qemu-aarch64-static (--version, check-config on the shipped
#     example, a short demo) and the armhf one under qemu-arm-static (--version, check-config);
#  6. installs the host package with dpkg -i, checks files, user, groups, permissions and the unit
#     (systemd-analyze verify + security score), upgrades twice with an edited config (kept),
#     removes (config and data kept) and purges (all gone).
# The machine is left as it was found: the package is purged and users/groups CI created are
# deleted again. Environment: DG_HOST_PROFILE (default release: what the tests already built),
# DG_PROFILE (Arm packages, default dist), DG_DEB_OUT (default $CARGO_TARGET_DIR/debian),
# DG_MAX_EXPOSURE (systemd-analyze security limit, default 2.0), CARGO_BUILD_JOBS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
HOST_PROFILE=${DG_HOST_PROFILE:-release}
ARM_PROFILE=${DG_PROFILE:-dist}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${DG_DEB_OUT:-$TARGET_DIR/debian}
MAX_EXPOSURE=${DG_MAX_EXPOSURE:-2.0}
PKG=district-gateway
NAME=district-gateway
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
HOST_ARCH=$(dpkg --print-architecture)
T0=$(date +%s)

step() { printf '\n== %s  [%ss]\n' "$*" "$(($(date +%s) - T0))"; }
fail() { echo "ci-package: FAIL: $*" >&2; exit 1; }
ok() { echo "   ok: $*"; }
# expect_stat PATH MODE OWNER:GROUP
expect_stat() {
    local got
    got=$(stat -c '%a %U:%G' "$1" 2>/dev/null) || fail "$1 is missing"
    [ "$got" = "$2 $3" ] || fail "$1: expected $2 $3, got $got"
    ok "$1 $got"
}

WORK=$(mktemp -d /tmp/dg-ci-package.XXXXXX)
CREATED_GROUPS=()
USER_EXISTED=0
getent passwd "$NAME" >/dev/null && USER_EXISTED=1
cleanup() {
    local rc=$?
    if dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null | grep -qv '^not-installed$'; then
        dpkg --purge "$PKG" >/dev/null 2>&1 || true
    fi
    if [ "$USER_EXISTED" = 0 ] && getent passwd "$NAME" >/dev/null; then
        deluser --system --quiet "$NAME" >/dev/null 2>&1 || true
        delgroup --system --quiet "$NAME" >/dev/null 2>&1 || true
    fi
    for g in "${CREATED_GROUPS[@]}"; do groupdel "$g" 2>/dev/null || true; done
    rm -rf "$WORK"
    echo "ci-package: $([ $rc = 0 ] && echo passed || echo "FAILED ($rc)") in $(($(date +%s) - T0)) s"
}
trap cleanup EXIT

# --- 1. tools ----------------------------------------------------------------------------------
step "tools"
need=()
for p in gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross \
    qemu-user-static libclang-dev systemd adduser init-system-helpers binutils xz-utils; do
    dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "   apt-get install ${need[*]}"
    (apt-get update -qq || true)
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
installed_targets=$(rustup target list --installed)
for t in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
    grep -qx "$t" <<<"$installed_targets" || rustup target add "$t"
done
cargo deb --version >/dev/null 2>&1 || cargo install --locked cargo-deb@^3
ok "$(cargo deb --version), $(qemu-aarch64-static --version | head -n1), $(systemd-analyze --version | head -n1)"

# --- 2. build ----------------------------------------------------------------------------------
mkdir -p "$OUT"
rm -f "$OUT/${PKG}_${VERSION}_"*.deb
step "build host package ($HOST_ARCH, profile $HOST_PROFILE)"
cargo deb --locked --profile "$HOST_PROFILE" --output "$OUT"
step "build Raspberry Pi packages (arm64, armhf; profile $ARM_PROFILE)"
DG_PROFILE=$ARM_PROFILE DG_DEB_OUT=$OUT DG_NO_APT=1 bash packaging/build-arm.sh arm64 armhf

declare -A DEB
for a in "$HOST_ARCH" arm64 armhf; do
    DEB[$a]=$OUT/${PKG}_${VERSION}_$a.deb
    [ -f "${DEB[$a]}" ] || fail "${DEB[$a]} was not built"
done

# --- 3. package contents -----------------------------------------------------------------------
declare -A ELF_MACHINE=([amd64]="Advanced Micro Devices X86-64" [arm64]="AArch64" [armhf]="ARM")
for a in "$HOST_ARCH" arm64 armhf; do
    deb=${DEB[$a]}
    step "dpkg-deb --info/--contents $(basename "$deb")"
    dpkg-deb --info "$deb"
    dpkg-deb --contents "$deb" | tee "$WORK/contents-$a"
    [ "$(dpkg-deb -f "$deb" Architecture)" = "$a" ] || fail "Architecture is not $a"
    [ "$(dpkg-deb -f "$deb" Version)" = "$VERSION" ] || fail "Version is not $VERSION"
    GLIBC_DEP=$(dpkg-deb -f "$deb" Depends | sed -n 's/.*libc6 (>= \([0-9.]*\)).*/\1/p')
    [ -n "$GLIBC_DEP" ] || fail "Depends lacks libc6 (>= ...)"
    dpkg-deb -f "$deb" Depends | grep -q 'adduser' || fail "Depends lacks adduser"
    while read -r mode path; do
        grep -qE "^$mode (root/root|0/0) +[0-9]+ [0-9-]+ [0-9:]+ \./$path\$" "$WORK/contents-$a" \
            || fail "$a: ./$path not in the package with mode $mode, owner root"
    done <<'EOF'
-rwxr-xr-x usr/bin/district-gateway
-rw-r----- etc/district-gateway/gateway.toml
-rw-r--r-- usr/lib/systemd/system/district-gateway.service
-rw-r--r-- usr/share/district-gateway/grafana-dashboard.json
-rw-r--r-- usr/share/doc/district-gateway/README.md
-rw-r--r-- usr/share/doc/district-gateway/INSTALL.md
-rw-r--r-- usr/share/doc/district-gateway/PACKAGING.md
-rw-r--r-- usr/share/doc/district-gateway/examples/gateway.toml
EOF
    ok "files and modes"
    mkdir -p "$WORK/ctrl-$a" "$WORK/root-$a"
    dpkg-deb --control "$deb" "$WORK/ctrl-$a"
    dpkg-deb --extract "$deb" "$WORK/root-$a"
    [ "$(cat "$WORK/ctrl-$a/conffiles")" = /etc/district-gateway/gateway.toml ] \
        || fail "conffiles is not exactly /etc/district-gateway/gateway.toml: $(cat "$WORK/ctrl-$a/conffiles")"
    ok "conffiles: $(tr '\n' ' ' <"$WORK/ctrl-$a/conffiles")"
    for s in postinst prerm postrm; do
        [ -x "$WORK/ctrl-$a/$s" ] || fail "maintainer script $s missing or not executable"
        sh -n "$WORK/ctrl-$a/$s" || fail "$s: syntax error"
        ! grep -q '#DEBHELPER#' "$WORK/ctrl-$a/$s" || fail "$s: #DEBHELPER# not substituted"
    done
    grep -q 'adduser --system' "$WORK/ctrl-$a/postinst" || fail "postinst does not create the user"
    grep -q 'deb-systemd-helper enable district-gateway.service' "$WORK/ctrl-$a/postinst" || fail "postinst does not enable the unit"
    grep -q 'try-restart district-gateway.service' "$WORK/ctrl-$a/postinst" || fail "postinst does not restart after upgrade"
    grep -q 'deb-systemd-invoke stop district-gateway.service' "$WORK/ctrl-$a/prerm" || fail "prerm does not stop the unit"
    grep -q 'rm -rf /var/lib/district-gateway' "$WORK/ctrl-$a/postrm" || fail "postrm purge keeps the data"
    ok "maintainer scripts: postinst (user, groups, data dir, enable, try-restart), prerm (stop on remove), postrm (purge)"
    cmp -s "$WORK/root-$a/etc/district-gateway/gateway.toml" config/gateway.toml || fail "shipped config differs from config/gateway.toml"
    cmp -s "$WORK/root-$a/usr/lib/systemd/system/district-gateway.service" systemd/district-gateway.service || fail "shipped unit differs"
    readelf -h "$WORK/root-$a/usr/bin/district-gateway" | grep -q "Machine: *${ELF_MACHINE[$a]}" \
        || fail "usr/bin/district-gateway is not a ${ELF_MACHINE[$a]} binary"
    ok "binary is ${ELF_MACHINE[$a]}"
done

# --- 4. Arm binaries: size and dependencies ----------------------------------------------------
declare -A SYSROOT=([arm64]=/usr/aarch64-linux-gnu [armhf]=/usr/arm-linux-gnueabihf)
declare -A QEMU=([arm64]=qemu-aarch64-static [armhf]=qemu-arm-static)
declare -A LDSO=([arm64]=lib/ld-linux-aarch64.so.1 [armhf]=lib/ld-linux-armhf.so.3)
for a in arm64 armhf; do
    bin=$WORK/root-$a/usr/bin/district-gateway
    step "$a binary: size and dependencies"
    echo "   size: $(stat -c %s "$bin") bytes ($(du -h "$bin" | cut -f1)); .deb: $(stat -c %s "${DEB[$a]}") bytes"
    file "$bin" 2>/dev/null || true
    echo "   readelf -d (NEEDED):"
    readelf -d "$bin" | grep NEEDED | sed 's/^/     /'
    echo "   interpreter: $(readelf -l "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')"
    echo "   ldd (the target's ld.so --list under ${QEMU[$a]}):"
    "${QEMU[$a]}" -L "${SYSROOT[$a]}" "${SYSROOT[$a]}/${LDSO[$a]}" --list "$bin" | sed 's/^/     /'
    floor=$(readelf -W --version-info "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)
    echo "   highest glibc symbol version: $floor (Depends: libc6 (>= $GLIBC_DEP))"
    readelf -W --dyn-syms "$bin" | grep -oE "[A-Za-z0-9_]+@GLIBC_$floor" | sort -u | sed 's/^/     /'
    [ "$(printf '%s\n%s\n' "$floor" "$GLIBC_DEP" | sort -V | tail -n1)" = "$GLIBC_DEP" ] \
        || fail "$a binary needs glibc $floor but the package depends on libc6 (>= $GLIBC_DEP)"
    readelf -d "$bin" | grep NEEDED | grep -vE '\[(libc|libm|libgcc_s|ld-linux[-a-z0-9]*)\.so\.[0-9]+\]' \
        && fail "$a binary needs a library outside libc6/libgcc-s1"
    ok "only libc6 and libgcc-s1, glibc >= $floor"
done

# --- 5. qemu smoke run -------------------------------------------------------------------------
step "arm64 smoke run under qemu-aarch64-static"
Q64=(qemu-aarch64-static -L /usr/aarch64-linux-gnu "$WORK/root-arm64/usr/bin/district-gateway")
"${Q64[@]}" --version | tee "$WORK/version"
grep -q "$VERSION" "$WORK/version" || fail "--version does not print $VERSION"
"${Q64[@]}" check-config --config "$WORK/root-arm64/etc/district-gateway/gateway.toml"
# Under qemu-user the demo cannot start its broker as a child process of the emulated binary (no
# binfmt_misc here), so the arm64 demo uses a host mosquitto on loopback (--broker: no outage step).
MQ_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\nuser root\n' "$MQ_PORT" >"$WORK/mq.conf"
mosquitto -c "$WORK/mq.conf" >/dev/null 2>&1 &
MQ_PID=$!
sleep 1
(cd "$WORK" && timeout 300 "${Q64[@]}" demo --seconds 5 --broker "mqtt://127.0.0.1:$MQ_PORT") >"$WORK/demo.log" 2>&1 \
    || { kill "$MQ_PID" 2>/dev/null; cat "$WORK/demo.log"; fail "arm64 demo failed"; }
kill "$MQ_PID" 2>/dev/null || true
head -n 15 "$WORK/demo.log"
echo "   ... ($(wc -l <"$WORK/demo.log") lines)"
tail -n 8 "$WORK/demo.log"
ok "arm64: --version, check-config, demo --seconds 5"
step "armhf smoke run under qemu-arm-static"
Q32=(qemu-arm-static -L /usr/arm-linux-gnueabihf "$WORK/root-armhf/usr/bin/district-gateway")
"${Q32[@]}" --version
"${Q32[@]}" check-config --config "$WORK/root-armhf/etc/district-gateway/gateway.toml"
ok "armhf: --version, check-config"

# --- 6. install, upgrade, remove, purge (host package) ------------------------------------------
step "install ${DEB[$HOST_ARCH]##*/}"
if dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null | grep -qv '^not-installed$'; then
    fail "$PKG is already installed on this machine; purge it first"
fi
# Raspberry Pi OS has gpio and spi groups; create them (removed again at the end) so that the
# postinst's "join the hardware groups that exist" path is exercised. i2c is left as it is.
for g in gpio spi; do
    if ! getent group "$g" >/dev/null; then groupadd --system "$g"; CREATED_GROUPS+=("$g"); fi
done
dpkg -i "${DEB[$HOST_ARCH]}" </dev/null
[ "$(dpkg-query -W -f='${Version} ${db:Status-Status}' "$PKG")" = "$VERSION installed" ] || fail "not installed"
district-gateway --version
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd "$NAME") || fail "user $NAME missing"
[ "$uid" -lt 1000 ] || fail "$NAME is not a system user (uid $uid)"
[ "$home" = /var/lib/district-gateway ] && [ "$shell" = /usr/sbin/nologin ] || fail "home/shell: $home $shell"
[ "$(getent group "$gid" | cut -d: -f1)" = "$NAME" ] || fail "primary group is not $NAME"
ok "user $NAME uid $uid, home $home, shell $shell"
groups_of=" $(id -nG "$NAME") "
for g in gpio spi i2c dialout; do
    if getent group "$g" >/dev/null; then
        [[ $groups_of == *" $g "* ]] || fail "$NAME is not in existing group $g"
        ok "member of $g"
    else
        [[ $groups_of != *" $g "* ]] || fail "member of missing group $g?"
        ok "group $g does not exist here: skipped"
    fi
done
expect_stat /usr/bin/district-gateway 755 root:root
expect_stat /etc/district-gateway 750 root:$NAME
expect_stat /etc/district-gateway/gateway.toml 640 root:$NAME
expect_stat /etc/district-gateway/codecs 750 root:$NAME
[ -z "$(ls -A /etc/district-gateway/codecs)" ] || fail "codecs dir is not empty"
expect_stat /var/lib/district-gateway 700 $NAME:$NAME
expect_stat /usr/lib/systemd/system/district-gateway.service 644 root:root
expect_stat /usr/share/district-gateway/grafana-dashboard.json 644 root:root
[ -L /etc/systemd/system/multi-user.target.wants/district-gateway.service ] || fail "unit not enabled"
ok "unit enabled (multi-user.target.wants)"
dpkg-statoverride --list | grep district-gateway
runuser -u "$NAME" -- district-gateway check-config --config /etc/district-gateway/gateway.toml
ok "the daemon's user reads the config"
! runuser -u nobody -- cat /etc/district-gateway/gateway.toml >/dev/null 2>&1 || fail "others can read the config"
ok "other users cannot read the config"
systemd-analyze verify /usr/lib/systemd/system/district-gateway.service >"$WORK/verify" 2>&1 \
    || { cat "$WORK/verify"; fail "systemd-analyze verify"; }
[ ! -s "$WORK/verify" ] || { cat "$WORK/verify"; fail "systemd-analyze verify is not clean"; }
ok "systemd-analyze verify: clean"
systemd-analyze security --offline=true /usr/lib/systemd/system/district-gateway.service >"$WORK/security" 2>&1 || true
grep -E '^✗' "$WORK/security" || true
score=$(sed -n 's/.*Overall exposure level for district-gateway.service: \([0-9.]*\).*/\1/p' "$WORK/security")
[ -n "$score" ] || { cat "$WORK/security"; fail "no systemd-analyze security score"; }
tail -n1 "$WORK/security"
awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }' || fail "exposure $score > $MAX_EXPOSURE"
ok "systemd-analyze security: exposure $score (limit $MAX_EXPOSURE)"

# Upgrade packages made from the host package: same files, higher version; the second one also
# ships a changed example config (as a real release would).
repack() { # NEW_VERSION CHANGE_CONFFILE(0|1) OUTPUT
    local d=$WORK/repack-$1
    rm -rf "$d"
    dpkg-deb -R "${DEB[$HOST_ARCH]}" "$d"
    sed -i "s/^Version: .*/Version: $1/" "$d/DEBIAN/control"
    if [ "$2" = 1 ]; then
        echo "# (a new release's example config)" >>"$d/etc/district-gateway/gateway.toml"
        if [ -f "$d/DEBIAN/md5sums" ]; then
            sed -i "s|^[0-9a-f]*  etc/district-gateway/gateway.toml$|$(cd "$d" && md5sum etc/district-gateway/gateway.toml)|" "$d/DEBIAN/md5sums"
        fi
    fi
    dpkg-deb --root-owner-group -Zxz -b "$d" "$3" >/dev/null
}
conf=/etc/district-gateway/gateway.toml
sed -i 's/^id = "garstedt-01"/id = "ci-edited-01"/' "$conf"
grep -q '^id = "ci-edited-01"' "$conf" || fail "could not edit the config"
edited=$(sha256sum <"$conf")
runuser -u "$NAME" -- sh -c 'echo kept > /var/lib/district-gateway/ci-marker'

step "upgrade to $VERSION-1 (config edited, example unchanged): edits kept, no prompt"
repack "$VERSION-1" 0 "$WORK/up1.deb"
dpkg -i "$WORK/up1.deb" </dev/null
[ "$(dpkg-query -W -f='${Version}' "$PKG")" = "$VERSION-1" ] || fail "upgrade 1 not installed"
[ "$(sha256sum <"$conf")" = "$edited" ] || fail "edited config was replaced"
expect_stat "$conf" 640 root:$NAME
[ "$(cat /var/lib/district-gateway/ci-marker)" = kept ] || fail "data dir lost"
expect_stat /var/lib/district-gateway 700 $NAME:$NAME
[ "$(id -u "$NAME")" = "$uid" ] || fail "uid changed"
ok "config, data and user kept"

step "upgrade to $VERSION-2 (config edited, example changed; --force-confold as unattended installs use)"
repack "$VERSION-2" 1 "$WORK/up2.deb"
dpkg --force-confold -i "$WORK/up2.deb" </dev/null
[ "$(dpkg-query -W -f='${Version}' "$PKG")" = "$VERSION-2" ] || fail "upgrade 2 not installed"
[ "$(sha256sum <"$conf")" = "$edited" ] || fail "edited config was replaced"
[ -f "$conf.dpkg-dist" ] && tail -n1 "$conf.dpkg-dist" | grep -q 'new release' || fail "no $conf.dpkg-dist"
expect_stat "$conf" 640 root:$NAME
[ "$(cat /var/lib/district-gateway/ci-marker)" = kept ] || fail "data dir lost"
ok "edited config kept, the new example is $conf.dpkg-dist"
runuser -u "$NAME" -- district-gateway check-config --config "$conf"

step "remove (dpkg -r): binary and unit gone; config, data and user kept"
dpkg -r "$PKG"
[ ! -e /usr/bin/district-gateway ] && [ ! -e /usr/lib/systemd/system/district-gateway.service ] || fail "files left after remove"
[ "$(sha256sum <"$conf")" = "$edited" ] || fail "config not kept on remove"
[ "$(cat /var/lib/district-gateway/ci-marker)" = kept ] || fail "data not kept on remove"
getent passwd "$NAME" >/dev/null || fail "user removed"
[ "$(dpkg-query -W -f='${db:Status-Status}' "$PKG")" = config-files ] || fail "not in config-files state"
ok "removed; config, data and user kept"

step "purge (dpkg -P): config, data and overrides gone"
dpkg -P "$PKG"
for p in /etc/district-gateway /var/lib/district-gateway /etc/systemd/system/multi-user.target.wants/district-gateway.service \
    /etc/systemd/system/district-gateway.service; do
    [ ! -e "$p" ] && [ ! -L "$p" ] || fail "$p left after purge"
done
! dpkg-statoverride --list | grep -q district-gateway || fail "stat overrides left after purge"
getent passwd "$NAME" >/dev/null && ok "system user kept (Debian practice; CI deletes it now)"
ok "purged"

step "packages"
ls -l "$OUT"/*.deb
