#!/usr/bin/env bash
# Captures real terraform output on examples/demo into tests/fixtures/terraform/, for parser
# tests: each run's stdout and stderr go to separate files and INDEX.md records the command line
# and exit code. Runs terraform 1.15.5 (and 1.0.3 once) from tools/ with local state in a
# temporary directory; takes about two minutes. Outputs hold generated ids, timestamps and
# sandbox secrets in clear (terraform's -json outputs and show -json do not mask them).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/tests/fixtures/terraform"
TOOLS="$ROOT/tools"

bash "$ROOT/scripts/setup.sh" >/dev/null

WORK="$(mktemp -d "${TMPDIR:-/tmp}/terrastream-fixtures.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

mkdir -p "$OUT"
rm -f "$OUT"/*.jsonl "$OUT"/*.json "$OUT"/*.txt "$OUT/INDEX.md"
{
    echo "# terraform transcripts"
    echo
    echo "Captured by \`scripts/capture-fixtures.sh\` on $(date -u +%Y-%m-%d) from examples/demo (local state,"
    echo "sandbox provider). \`<name>.stdout.*\` is terraform's stdout, \`<name>.stderr.txt\` its stderr."
    echo
    echo "| name | terraform | command | exit code |"
    echo "| --- | --- | --- | --- |"
} >"$OUT/INDEX.md"

# new_workspace DIR: a copy of the demo with its own sandbox directory.
new_workspace() {
    mkdir -p "$1/sandbox"
    cp "$ROOT"/examples/demo/*.tf "$1/"
}

# tf TERRAFORM DIR ARGS...: terraform with the environment it always needs.
tf() {
    local terraform="$1" dir="$2"
    shift 2
    (cd "$dir" && env -u TF_LOG -u TF_DATA_DIR -u TF_PLUGIN_CACHE_DIR -u RUST_BACKTRACE \
        TF_CLI_CONFIG_FILE="$TOOLS/terraformrc" CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 TF_INPUT=0 \
        SANDBOX_DIR="$dir/sandbox" "$terraform" "$@" </dev/null)
}

# capture NAME EXT TERRAFORM DIR ARGS...: runs terraform, keeps stdout and stderr, logs the code.
capture() {
    local name="$1" ext="$2" terraform="$3" dir="$4" code=0
    shift 4
    tf "$terraform" "$dir" "$@" >"$OUT/$name.stdout.$ext" 2>"$OUT/$name.stderr.txt" || code=$?
    local version
    version="$(tf "$terraform" "$dir" version | head -n 1 | sed 's/^Terraform v//')"
    printf '| %s | %s | `terraform %s` | %s |\n' "$name" "$version" "$*" "$code" >>"$OUT/INDEX.md"
    printf 'capture: %-32s exit %s\n' "$name" "$code" >&2
}

TF="$TOOLS/bin/terraform"
TF_OLD="$TOOLS/bin/terraform-1.0.3"
SLOW="-var=base_delay_ms=3000" # telemetry_db takes 12 s: apply_progress messages appear
QUICK="-var=base_delay_ms=100"

# --- terraform 1.15.5 -----------------------------------------------------------------------------
WS="$WORK/demo"
new_workspace "$WS"
capture init jsonl "$TF" "$WS" init -json

capture validate_valid json "$TF" "$WS" validate -json
printf 'resource "sandbox_resource" "broken" {\n  name = \n  kind = "function"\n}\n' >"$WS/broken.tf"
capture validate_syntax_error json "$TF" "$WS" validate -json
rm "$WS/broken.tf"
printf 'output "undeclared" {\n  value = var.not_declared\n}\n' >"$WS/undeclared.tf"
capture validate_undeclared_variable json "$TF" "$WS" validate -json
rm "$WS/undeclared.tf"

capture plan_create jsonl "$TF" "$WS" plan -json -out=create.tfplan "$SLOW"
capture apply_success jsonl "$TF" "$WS" apply -json create.tfplan
capture show_state json "$TF" "$WS" show -json
capture plan_no_changes jsonl "$TF" "$WS" plan -json -detailed-exitcode "$SLOW"
capture plan_rename_replace jsonl "$TF" "$WS" plan -json "$SLOW" -var=dashboard_title=ops
rm "$WS"/sandbox/function-*-alerts-*.json
capture plan_after_drift jsonl "$TF" "$WS" plan -json "$SLOW"
tf "$TF" "$WS" apply -auto-approve -no-color "$SLOW" >/dev/null # back to all 12 objects
capture destroy jsonl "$TF" "$WS" destroy -json -auto-approve "$SLOW"

capture apply_fail_on_create jsonl "$TF" "$WS" apply -json -auto-approve "$QUICK" \
    '-var=fail_on_create=["grafana"]'
tf "$TF" "$WS" destroy -auto-approve -no-color "$QUICK" >/dev/null

# One SIGINT to terraform's process group once the first object is ready: a graceful stop.
# setsid makes terraform its own process group leader, as the gateway spawns it.
name=apply_interrupted
setsid bash -c 'cd "$1" && shift && exec "$@"' _ "$WS" env -u RUST_BACKTRACE \
    TF_CLI_CONFIG_FILE="$TOOLS/terraformrc" CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 TF_INPUT=0 \
    SANDBOX_DIR="$WS/sandbox" "$TF" apply -json -auto-approve -var=base_delay_ms=1000 \
    </dev/null >"$OUT/$name.stdout.jsonl" 2>"$OUT/$name.stderr.txt" &
pid=$!
[[ "$(ps -o pgid= -p "$pid" | tr -d ' ')" == "$pid" ]] || { echo "capture: terraform does not lead its process group" >&2; exit 1; }
until grep -qs '"type":"apply_complete"' "$OUT/$name.stdout.jsonl"; do
    kill -0 "$pid" 2>/dev/null || { echo "capture: terraform ended before any object was ready" >&2; exit 1; }
    sleep 0.1
done
kill -INT -- "-$pid"
code=0
wait "$pid" || code=$?
printf '| %s | %s | `terraform apply -json -auto-approve -var=base_delay_ms=1000`, one SIGINT to its process group after the first apply_complete | %s |\n' \
    "$name" "1.15.5" "$code" >>"$OUT/INDEX.md"
printf 'capture: %-32s exit %s\n' "$name" "$code" >&2
tf "$TF" "$WS" destroy -auto-approve -no-color "$QUICK" >/dev/null

# --- terraform 1.0.3 ------------------------------------------------------------------------------
WS_OLD="$WORK/demo-1.0.3"
new_workspace "$WS_OLD"
tf "$TF_OLD" "$WS_OLD" init -no-color >/dev/null
capture apply_success_1.0.3 jsonl "$TF_OLD" "$WS_OLD" apply -json -auto-approve "$QUICK"
tf "$TF_OLD" "$WS_OLD" destroy -auto-approve -no-color "$QUICK" >/dev/null

leftovers="$(ls "$WS/sandbox" "$WS_OLD/sandbox")"
if [[ -n "$(ls -A "$WS/sandbox")$(ls -A "$WS_OLD/sandbox")" ]]; then
    printf 'capture: objects left in the sandboxes:\n%s\n' "$leftovers" >&2
    exit 1
fi
echo "fixtures written to $OUT"
