#!/usr/bin/env bash
# Follows the README as a new user would, on a fresh clone of this repository's HEAD: the run
# command of "## Run it" exactly as written (plus `--bind` for a free port), then the README's
# own token/ID/deploy lines, then the dashboard's first page. Fails unless the demo deploy ends
# `succeeded`. The commands are read from README.md itself, so a README that stops working
# fails this test.
#
# CARGO_TARGET_DIR is set to this checkout's target directory: the clone reuses compiled
# dependencies, and run.sh is proven to start the binary it built wherever cargo put it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$root/tools/venv/bin/python"
[[ -x "$python" ]] || python="python3"

work="$(mktemp -d "${TMPDIR:-/tmp}/terrastream-readme.XXXXXX")"
gateway_pid=""
cleanup() {
    if [[ -n "$gateway_pid" ]] && kill -0 "$gateway_pid" 2>/dev/null; then
        kill -TERM "$gateway_pid" 2>/dev/null || true
        wait "$gateway_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    printf 'readme-test: FAILED: %s\n' "$*" >&2
    if [[ -f "$work/gateway.log" ]]; then
        printf -- '--- gateway output (last 60 lines) ---\n' >&2
        tail -n 60 "$work/gateway.log" >&2
    fi
    exit 1
}

# The n-th ```sh block (0-based) after a heading, as written.
readme_block() {
    "$python" -I - "$root/README.md" "$1" "$2" <<'EOF'
import re, sys
path, heading, index = sys.argv[1], sys.argv[2], int(sys.argv[3])
text = open(path, encoding="utf-8").read()
section = text.split("\n## " + heading + "\n", 1)
if len(section) != 2:
    sys.exit(f"README.md has no '## {heading}' section")
section = section[1].split("\n## ", 1)[0]
blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
if index >= len(blocks):
    sys.exit(f"README.md's '## {heading}' has no sh block #{index}")
sys.stdout.write(blocks[index])
EOF
}

run_command="$(readme_block "Run it" 0)"
deploy_lines="$(readme_block "Run it" 1)"
port="$("$python" -I -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

git clone --quiet "$root" "$work/terrastream"
cd "$work/terrastream"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

printf 'readme-test: %s --bind 127.0.0.1:%s (in a fresh clone)\n' "$run_command" "$port" >&2
# shellcheck disable=SC2086 # the README's command, word-split as a shell would
setsid bash -c "$run_command --bind 127.0.0.1:$port" >"$work/gateway.log" 2>&1 &
gateway_pid=$!

# The first start sets up the toolchain and builds the release binary: minutes, not seconds.
for _ in $(seq 1 1200); do
    if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
        break
    fi
    kill -0 "$gateway_pid" 2>/dev/null || fail "the run command exited before the gateway answered"
    sleep 0.5
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null || fail "the gateway did not answer /healthz"
grep -q "Admin token" "$work/gateway.log" || fail "the first start did not print the admin token"

# The README's lines, only pointed at the free port.
printf 'readme-test: the README deploy lines\n' >&2
deploy_lines="${deploy_lines//localhost:8080/localhost:$port}"
deploy_lines="${deploy_lines//127.0.0.1:8080/127.0.0.1:$port}"
stream="$(bash -euo pipefail -c "$deploy_lines" 2>"$work/deploy.err")" || fail "the README's deploy lines failed: $(tail -n 5 "$work/deploy.err")"
printf '%s\n' "$stream" >"$work/stream.txt"
done_line="$(grep '^data: .*"type":"done"' "$work/stream.txt" | tail -n 1)"
[[ -n "$done_line" ]] || fail "the deploy stream has no done event:
$(tail -n 20 "$work/stream.txt")"
case "$done_line" in
    *'"outcome":"succeeded"'*) ;;
    *) fail "the demo deploy did not succeed: $done_line" ;;
esac
lines="$(grep -c '^event: log' "$work/stream.txt")"

# The dashboard's first page, as the README's link opens it.
page="$(curl -fsS -D "$work/headers" "http://127.0.0.1:$port/")" || fail "GET / failed"
grep -qi '^content-type: text/html' "$work/headers" || fail "GET / is not HTML"
grep -q '<title>terrastream' <<<"$page" || fail "GET / is not the dashboard"

printf 'readme-test: ok: the demo deployed (%s log lines) and the dashboard answered\n' "$lines" >&2
