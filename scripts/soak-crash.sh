#!/usr/bin/env bash
# Crash soak: runs the kill test of tests/api/adoption.rs for ROUNDS rounds (default 50).
# Each round starts the real gateway binary, deploys (or destroys) sandbox objects, kills the
# gateway with SIGKILL at a moment of init, plan, apply or destroy (the moments cycle), starts
# it again on the same data directory and port, and checks that the adopted run ends as it
# would have: stream joined across the restart gap-free with every line terraform printed once,
# state equal to the sandbox. Four rounds run at once. See docs/resilience.md.
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
    --exact adoption::killing_the_gateway_at_any_moment_leaves_the_run_to_finish_and_the_restart_adopts_it \
    --nocapture
