#!/usr/bin/env bash
# Starts the gateway on 127.0.0.1:8080 with its data under ./data, after installing the
# toolchain if needed. Extra arguments go to `terrastream serve` (see --help).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

"$root/scripts/setup.sh"

cargo build --release --bin terrastream
# Where cargo put it: target/, or wherever CARGO_TARGET_DIR (or a cargo config) says.
target_dir="$(cargo metadata --format-version 1 --no-deps \
    | "$root/tools/venv/bin/python" -I -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
exec "$target_dir/release/terrastream" serve --tools-dir "$root/tools" "$@"
