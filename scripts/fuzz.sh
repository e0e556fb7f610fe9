#!/usr/bin/env bash
# Fuzzes the gateway from its own OpenAPI document: schemathesis (installed by setup.sh) sends
# every documented operation generated requests, valid and invalid, against a gateway running
# real terraform with the sandbox provider, and fails on any finding of the checks below.
#
# The gateway gets a fresh data directory, a free port on 127.0.0.1, and objects to work on
# (a deployed twin with a plan preview, a credential, a webhook), whose ids the operations'
# path parameters take, so the answers checked are real ones and not only 404s. Everything
# runs in a network namespace of its own that has only loopback: the webhook URLs and host
# names the fuzzer invents make the gateway try deliveries and DNS lookups, which must not
# leave this machine.
#
#   scripts/fuzz.sh                        # 2-3 minutes on 2 cores
#   FUZZ_MAX_EXAMPLES=200 scripts/fuzz.sh  # more cases per operation (default 100)
#   FUZZ_SEED=random scripts/fuzz.sh       # another seed than CI's (it is printed)
#   scripts/fuzz.sh --report har          # more arguments go to `schemathesis run`
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

max_examples="${FUZZ_MAX_EXAMPLES:-100}"
# A fixed seed keeps CI repeatable; FUZZ_SEED=random draws one (it is printed).
seed="${FUZZ_SEED:-14}"
[[ "$seed" != "random" ]] || seed="$RANDOM"
checks="not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance"

if [[ -z "${TERRASTREAM_FUZZ_INSIDE:-}" ]]; then
    "$root/scripts/setup.sh" >/dev/null
    cargo build --quiet --bin terrastream
    if ! command -v ip >/dev/null 2>&1; then
        if [[ "$(id -u)" -ne 0 ]]; then
            echo "fuzz: 'ip' is missing: sudo apt-get install -y iproute2" >&2
            exit 1
        fi
        echo "fuzz: installing iproute2 with apt-get" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
    fi
    map=()
    [[ "$(id -u)" -eq 0 ]] || map=(--map-root-user)
    exec unshare "${map[@]}" --net --fork env TERRASTREAM_FUZZ_INSIDE=1 "$0" "$@"
fi

# --- inside the network namespace ------------------------------------------------------------------
ip link set lo up
python="$root/tools/venv/bin/python"
target_dir="$(cargo metadata --format-version 1 --no-deps \
    | "$python" -I -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
binary="$target_dir/debug/terrastream"

work="$(mktemp -d "${TMPDIR:-/tmp}/terrastream-fuzz.XXXXXX")"
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
    printf 'fuzz: FAILED: %s\n' "$*" >&2
    if [[ -f "$work/gateway.log" ]]; then
        printf -- '--- gateway output (last 40 lines) ---\n' >&2
        tail -n 40 "$work/gateway.log" >&2
    fi
    exit 1
}

port="$("$python" -I -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
token="$("$binary" token create --owner fuzz --admin --data-dir "$work/data" 2>/dev/null | grep -o 'tst_[0-9a-f]*' | head -n 1)"
[[ -n "$token" ]] || fail "terrastream token create printed no token"

# Interrupt running terraform at the end, so nothing outlives the data directory.
RUST_LOG="${RUST_LOG:-warn}" "$binary" serve --bind "127.0.0.1:$port" --data-dir "$work/data" \
    --tools-dir "$root/tools" --no-demo --on-shutdown interrupt --shutdown-grace-secs 5 \
    --cancel-grace-secs 5 --webhook-allow-private >"$work/gateway.log" 2>&1 &
gateway_pid=$!
for _ in $(seq 1 100); do
    curl -fsS "$base/readyz" >/dev/null 2>&1 && break
    kill -0 "$gateway_pid" 2>/dev/null || fail "the gateway exited before it was ready"
    sleep 0.2
done
curl -fsS "$base/readyz" >/dev/null || fail "the gateway is not ready"

# The objects the operations work on.
api() {
    local method="$1" path="$2"
    shift 2
    curl -fsS -X "$method" "$base$path" -H "Authorization: Bearer $token" \
        -H 'Content-Type: application/json' "$@"
}
field() { "$python" -I -c "import json, sys; print(json.load(sys.stdin)['$1'])"; }
wait_run() {
    local run="$1" status=""
    for _ in $(seq 1 300); do
        status="$(api GET "/runs/$run" | field status)"
        case "$status" in completed) return 0 ;; failed | cancelled) fail "run $run $status" ;; esac
        sleep 0.2
    done
    fail "run $run did not finish"
}
template="$(api GET /templates/demo)"
twin="$(api POST /twins -d "$template" | field id)"
deploy="$(api POST "/twins/$twin/deploy" | field job_id)"
wait_run "$deploy"
plan="$(api POST "/twins/$twin/plan" | field job_id)"
wait_run "$plan"
credential="$(api POST /credentials \
    -d '{"name": "fuzz", "provider": "sandbox", "env": {"FUZZ_SETTING": "some value"}}' | field id)"
# A closed loopback port: deliveries fail at once and are retried later.
webhook="$(api POST /webhooks -d '{"url": "http://127.0.0.1:9/hook"}' | field id)"
api POST "/twins/$twin/refresh" >/dev/null

cat >"$work/schemathesis.toml" <<EOF
# The ids each operation's path parameters take (schemathesis.toml, version 4).
[[operations]]
include-path-regex = "^/twins/\\\\{id\\\\}"
parameters = { "path.id" = "$twin" }

[[operations]]
include-path-regex = "^/runs/\\\\{id\\\\}"
parameters = { "path.id" = "$plan" }

[[operations]]
include-path-regex = "^/credentials/\\\\{id\\\\}"
parameters = { "path.id" = "$credential" }

[[operations]]
include-path-regex = "^/webhooks/\\\\{id\\\\}"
parameters = { "path.id" = "$webhook" }
EOF

printf 'fuzz: schemathesis on %s, %s examples per operation, seed %s\n' "$base" "$max_examples" "$seed" >&2
started=$SECONDS
status=0
# From the work directory: schemathesis keeps its example database in the current one.
cd "$work"
"$root/tools/venv/bin/schemathesis" --no-color --config-file "$work/schemathesis.toml" run "$base/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks "$checks" \
    --max-examples "$max_examples" \
    --seed "$seed" \
    --request-timeout 30 \
    --workers 1 \
    "$@" || status=$?
printf 'fuzz: schemathesis took %ss\n' "$((SECONDS - started))" >&2
if ! kill -0 "$gateway_pid" 2>/dev/null; then
    fail "the gateway died during the fuzzing"
fi
if grep -q "panicked" "$work/gateway.log"; then
    fail "the gateway panicked: $(grep -m1 panicked "$work/gateway.log")"
fi
[[ "$status" -eq 0 ]] || fail "schemathesis found failures (exit $status); replay with FUZZ_SEED=$seed"
printf 'fuzz: ok: no findings\n' >&2
