#!/usr/bin/env bash
# Runs every test: installs the toolchain (terraform, the sandbox provider) if needed, checks
# formatting and lints, then the whole workspace's tests against real terraform, then
# schemathesis against the API, then the dashboard in headless Chromium (installed with
# apt-get when missing).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

"$root/scripts/setup.sh"

# The tests start throwaway servers of their own: PostgreSQL (Debian's binaries, a cluster in
# a temporary directory, run as the postgres user) and nginx (the load balancer in front of
# the replica suite's gateways). Installed here when missing, never started as services.
need=()
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || need+=(postgresql)
[[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null 2>&1 || need+=(nginx)
if [[ ${#need[@]} -gt 0 ]]; then
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "test: missing ${need[*]}: sudo apt-get install -y ${need[*]}" >&2
        exit 1
    fi
    echo "test: installing ${need[*]} with apt-get (their services are not started)" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Packages must not start servers (or make a cluster) on this machine.
    mkdir -p /etc/postgresql-common
    [[ -f /etc/postgresql-common/createcluster.conf ]] ||
        echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
    policy_added=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        policy_added=1
    fi
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${need[@]}" >/dev/null
    [[ -z "$policy_added" ]] || rm -f /usr/sbin/policy-rc.d
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace "$@"
# The whole API suite again, every gateway on PostgreSQL: the same assertions on both stores.
TERRASTREAM_TEST_STORE=postgres cargo test --test api "$@"

# The API fuzzed from its own OpenAPI document: schemathesis against a real gateway and real
# terraform, in a network namespace of its own; any finding fails (scripts/fuzz.sh).
"$root/scripts/fuzz.sh"

# The dashboard in a real browser (e2e/dashboard.test.mjs): headless Chromium drives the
# gateway binary, which runs real terraform against the sandbox provider. Screenshots go to
# test-artifacts/.
cargo build --bin terrastream
export CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [[ ! -x "$CHROMIUM_PATH" ]]; then
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "test: chromium is missing: sudo apt-get install -y chromium (or set CHROMIUM_PATH)" >&2
        exit 1
    fi
    echo "test: installing chromium with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq chromium >/dev/null
fi
if ! command -v node >/dev/null 2>&1; then
    echo "test: node 20 or later (with npm) is needed for the dashboard's browser test" >&2
    exit 1
fi
if [[ ! -d e2e/node_modules/playwright-core ]]; then
    npm ci --prefix e2e --no-audit --no-fund
fi
npm --prefix e2e test

# The README as a new user follows it: a fresh clone, its run command, its deploy lines.
"$root/scripts/readme-test.sh"
