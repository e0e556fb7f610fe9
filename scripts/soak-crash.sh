#!/usr/bin/env bash
# Crash soak: runs the crash test of tests/api/resilience.rs for ROUNDS rounds (default 50).
# Each round starts the real gateway binary, deploys sandbox objects, kills the gateway with
# SIGKILL at a moment of the apply (the moments cycle), restarts it on the same data directory
# and checks that the run was settled and that terraform's state equals the sandbox; five rounds
# run at once. See docs/resilience.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

rounds="${1:-50}"
if ! [[ "$rounds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [ROUNDS]   (a positive number; default 50)" >&2
    exit 2
fi
if [[ ! -x tools/bin/terraform ]]; then
    echo "no tools/bin/terraform: run scripts/setup.sh first" >&2
    exit 1
fi

TERRASTREAM_SOAK_ROUNDS="$rounds" exec cargo test -p terrastream --test api -- \
    --exact resilience::killing_the_gateway_mid_apply_loses_nothing_and_the_restart_settles_the_run \
    --nocapture
