#!/usr/bin/env bash
# Build the Raspberry Pi packages without Docker: rustup's std for the targets + Debian's cross
# gcc as linker and C compiler (ring and QuickJS have C parts).
#
#   packaging/build-arm.sh                 # both: _arm64.deb and _armhf.deb in target/debian/
#   packaging/build-arm.sh arm64           # only one (arm64 | armhf | a Rust target triple)
#
# Environment: DG_PROFILE (default dist, the shipped build), DG_DEB_OUT (default
# target/debian), DG_NO_APT=1 (never call apt-get), CARGO_TARGET_DIR, CARGO_BUILD_JOBS (default 2).
# Needs Cargo.toml's [package.metadata.deb] (packaging/cargo-deb-metadata.toml).
# Without rustup: see packaging/README.md ("Without rustup") for Debian's rustc-web.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${DG_PROFILE:-dist}
OUT=${DG_DEB_OUT:-target/debian}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
export DEBIAN_FRONTEND=noninteractive

grep -q '^\[package\.metadata\.deb\]' Cargo.toml || {
    echo "build-arm: Cargo.toml has no [package.metadata.deb]; paste packaging/cargo-deb-metadata.toml" >&2
    exit 1
}

triples=()
for a in "${@:-arm64 armhf}"; do
    for t in $a; do
        case "$t" in
        arm64 | aarch64 | aarch64-unknown-linux-gnu) triples+=(aarch64-unknown-linux-gnu) ;;
        armhf | armv7 | armv7-unknown-linux-gnueabihf) triples+=(armv7-unknown-linux-gnueabihf) ;;
        *) echo "build-arm: unknown target '$t' (arm64 or armhf)" >&2; exit 2 ;;
        esac
    done
done

# triple -> Debian cross toolchain prefix and packages
gnu_prefix() {
    case "$1" in
    aarch64-unknown-linux-gnu) echo aarch64-linux-gnu ;;
    armv7-unknown-linux-gnueabihf) echo arm-linux-gnueabihf ;;
    esac
}
deb_arch() {
    case "$1" in
    aarch64-unknown-linux-gnu) echo arm64 ;;
    armv7-unknown-linux-gnueabihf) echo armhf ;;
    esac
}

# --- tools -------------------------------------------------------------------------------------
need_pkgs=()
for t in "${triples[@]}"; do
    p=$(gnu_prefix "$t")
    command -v "$p-gcc" >/dev/null || need_pkgs+=("gcc-$p")
    [ -e "/usr/$p/include/stdio.h" ] || need_pkgs+=("libc6-dev-$(deb_arch "$t")-cross")
    if [ "$t" = armv7-unknown-linux-gnueabihf ]; then
        # rquickjs has no pre-generated bindings for 32-bit Arm: bindgen needs libclang.
        grep -q 'features = \["parallel", "bindgen"\]' crates/core/Cargo.toml || {
            echo "build-arm: armhf needs rquickjs's bindgen feature for target_arch = \"arm\" in crates/core/Cargo.toml" >&2
            exit 1
        }
        dpkg-query -W -f='${db:Status-Status}' libclang-dev 2>/dev/null | grep -qx installed || need_pkgs+=(libclang-dev)
    fi
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
    if [ "${DG_NO_APT:-0}" = 1 ]; then
        echo "build-arm: missing ${need_pkgs[*]} (DG_NO_APT=1)" >&2
        exit 1
    fi
    echo "== apt-get install ${need_pkgs[*]}"
    (apt-get update -qq || true)
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
installed_targets=$(rustup target list --installed)
for t in "${triples[@]}"; do
    grep -qx "$t" <<<"$installed_targets" || rustup target add "$t"
done
if ! cargo deb --version >/dev/null 2>&1; then
    echo "== cargo install cargo-deb"
    cargo install --locked cargo-deb@^3
fi

# --- build -------------------------------------------------------------------------------------
mkdir -p "$OUT"
for t in "${triples[@]}"; do
    p=$(gnu_prefix "$t")
    T=$(echo "$t" | tr 'a-z-' 'A-Z_')
    u=$(echo "$t" | tr '-' '_')
    export "CARGO_TARGET_${T}_LINKER=$p-gcc"
    export "CC_${u}=$p-gcc" "CXX_${u}=$p-g++" "AR_${u}=$p-ar"
    # bindgen (armhf: rquickjs) must parse the target's C headers, not the host's.
    export "BINDGEN_EXTRA_CLANG_ARGS_${u}=--sysroot=/usr/$p"
    echo "== $t ($(deb_arch "$t")), profile $PROFILE"
    start=$(date +%s)
    cargo deb --locked --target "$t" --profile "$PROFILE" --output "$OUT"
    echo "   built in $(( $(date +%s) - start )) s"
done
ls -l "$OUT"/*.deb
