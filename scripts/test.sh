#!/usr/bin/env bash
# Runs the whole test suite: `cargo nextest run --workspace`.
#
# Installs what the suite needs first:
#   - a Python virtualenv with the pinned client libraries of tests-py/requirements.txt (used by
#     the interop tests through $MTPROXYD_PY), re-created only when requirements.txt changes;
#   - cargo-nextest, if it is missing (`cargo install --locked cargo-nextest`).
# Needs: a Rust toolchain, Python >= 3.11 with venv/pip, a C compiler, network for the first run.
#
# Environment:
#   MTPROXYD_VENV   where to keep the virtualenv (default: target/pyvenv)
#   MTPROXYD_PY     use this interpreter instead (skips the virtualenv setup)
#   PYTHON          interpreter used to create the virtualenv (default: python3)
#   MTPROXYD_SKIP_EXTERNAL=1  explicit opt-out: tests needing an external server or Python
#                   library that is missing skip with a notice instead of failing
# Extra arguments are passed to nextest (e.g. `bash scripts/test.sh -p stats`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/install-test-deps.sh  # microsocks, danted, ss-server for the upstream tests

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "==> installing cargo-nextest"
    cargo install --locked cargo-nextest
fi

if [[ -z "${MTPROXYD_PY:-}" && -f tests-py/requirements.txt ]]; then
    venv="${MTPROXYD_VENV:-$root/target/pyvenv}"
    stamp="$venv/.requirements.sha256"
    want="$(sha256sum tests-py/requirements.txt | cut -d' ' -f1)"
    if [[ ! -x "$venv/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
        echo "==> preparing Python virtualenv in $venv"
        rm -rf "$venv"
        mkdir -p "$(dirname "$venv")"
        "${PYTHON:-python3}" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            -r tests-py/requirements.txt
        echo "$want" > "$stamp"
    fi
    export MTPROXYD_PY="$venv/bin/python"
fi

# `-p/--package` narrows the run; otherwise the whole workspace.
scope=(--workspace)
for arg in "$@"; do
    case "$arg" in
        -p|--package|--package=*) scope=() ;;
    esac
done
echo "==> cargo nextest run ${scope[*]} $*"
exec cargo nextest run "${scope[@]}" "$@"
