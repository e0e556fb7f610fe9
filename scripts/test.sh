#!/usr/bin/env bash
# Runs every test: installs the toolchain (terraform, the sandbox provider) if needed, checks
# formatting and lints, then the whole workspace's tests against real terraform.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

"$root/scripts/setup.sh"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace "$@"
