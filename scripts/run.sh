#!/usr/bin/env bash
# Starts the gateway on 127.0.0.1:8080 with its data under ./data, after installing the
# toolchain if needed. Extra arguments go to `terrastream serve` (see --help).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

"$root/scripts/setup.sh"

cargo build --release --bin terrastream
exec "$root/target/release/terrastream" serve --tools-dir "$root/tools" "$@"
