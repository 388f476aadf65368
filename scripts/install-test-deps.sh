#!/bin/sh
# Installs the external servers the upstream integration tests run against (all bound to
# 127.0.0.1 by the tests): microsocks (SOCKS5 + username/password), dante-server (`danted`,
# SOCKS4/4a and SOCKS5), shadowsocks-libev (`ss-server`, AEAD ciphers), and nginx-light +
# openssl (the TLS origin of the front-emulation test, with a self-signed certificate), and
# chromium (the headless browser the admin-page test drives through Playwright).
# Idempotent: does nothing when every binary is already present. Installs as root (or with
# passwordless sudo) on a Debian/Ubuntu machine; runs `apt-get update` at most once.
set -eu

need=""
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have microsocks || need="$need microsocks"
have danted || need="$need dante-server"
have ss-server || need="$need shadowsocks-libev"
have nginx || need="$need nginx-light"
have openssl || need="$need openssl"
have chromium || need="$need chromium"

if [ -z "$need" ]; then
    echo "install-test-deps: microsocks, danted, ss-server, nginx, openssl already installed"
    exit 0
fi

# Cannot install: fail, naming what is missing. MTPROXYD_SKIP_EXTERNAL=1 is the explicit
# opt-out (the tests that need these servers then skip with a notice instead of failing).
cannot() {
    if [ -n "${MTPROXYD_SKIP_EXTERNAL:-}" ] && [ "${MTPROXYD_SKIP_EXTERNAL}" != 0 ]; then
        echo "install-test-deps: WARNING: $1; MTPROXYD_SKIP_EXTERNAL is set, continuing:$need" >&2
        exit 0
    fi
    echo "install-test-deps: ERROR: $1; install by hand:$need (or set MTPROXYD_SKIP_EXTERNAL=1)" >&2
    exit 1
}
if ! command -v apt-get >/dev/null 2>&1; then
    cannot "no apt-get"
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    cannot "need root (or passwordless sudo) to install"
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-test-deps: installing$need"
$SUDO apt-get update -q || cannot "apt-get update failed"
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $need || cannot "apt-get install failed"

# The packages ship system services; the tests start their own instances on loopback.
for svc in danted shadowsocks-libev nginx; do
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
done

for bin in microsocks danted ss-server nginx openssl chromium; do
    have "$bin" || { echo "install-test-deps: $bin still missing" >&2; exit 1; }
done
echo "install-test-deps: done"
