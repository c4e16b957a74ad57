# Shared by the scripts: where things live and how to start the local AWS API (moto).
# Everything installed goes under CALLFY_CACHE (outside the clone) so reruns are fast.

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CALLFY_CACHE="${CALLFY_CACHE:-$HOME/.cache/callfy}"
VENV="$CALLFY_CACHE/venv"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CALLFY_CACHE/target}"
export PATH="$HOME/.cargo/bin:$PATH"

# Local credentials and region, so the AWS SDK never looks for real ones.
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_DEFAULT_REGION="$AWS_REGION"
export AWS_EC2_METADATA_DISABLED=true

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Installs what is missing: a Python venv with moto[server] and cfn-lint, Rust components.
ensure_tools() {
  mkdir -p "$CALLFY_CACHE"
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is required (https://rustup.rs); it was not found on PATH" >&2
    exit 1
  fi
  if ! command -v python3 >/dev/null 2>&1; then
    log "installing python3"
    apt-get update -qq && apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
  fi
  local stamp="$VENV/.callfy-requirements"
  if [ ! -x "$VENV/bin/moto_server" ] || ! cmp -s "$ROOT/scripts/requirements.txt" "$stamp"; then
    log "installing moto[server] and cfn-lint into $VENV"
    python3 -m venv "$VENV" 2>/dev/null || {
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$VENV"
    }
    "$VENV/bin/pip" install -q --upgrade pip >/dev/null
    "$VENV/bin/pip" install -q -r "$ROOT/scripts/requirements.txt"
    cp "$ROOT/scripts/requirements.txt" "$stamp"
  fi
  if command -v rustup >/dev/null 2>&1; then
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
  fi
}

# The template's checks and `sam build` (aws-sam-cli, checkov, cfn-lint, cargo-lambda) in a venv
# of their own, apart from moto's: re-installed when scripts/requirements-infra.txt changes.
INFRA_VENV="$CALLFY_CACHE/venv-infra"
# The Rust standard library for a target triple, added by rustup when missing (fails without it).
ensure_rust_target() {
  rustup target list --installed | grep -q "^$1\$" || rustup target add "$1"
}

# Packages (default: the seven functions) built as deployed, the Makefile's static musl build,
# for x86_64 (this machine) into DIR/<package>/bootstrap. After ensure_infra_tools (cargo-lambda).
#   build_static_x86 DIR [PACKAGE ...]
build_static_x86() {
  local dir="$1"
  shift
  ensure_rust_target x86_64-unknown-linux-musl || return
  PATH="$INFRA_VENV/bin:$PATH" make -s lambdas LAMBDA_TARGET=x86_64-unknown-linux-musl LAMBDA_DIR="$dir" \
    LAMBDA_FLAGS=--quiet ${1:+LAMBDA_PACKAGES="$*"}
}

ensure_infra_tools() {
  mkdir -p "$CALLFY_CACHE"
  if ! command -v python3 >/dev/null 2>&1; then
    log "installing python3"
    apt-get update -qq && apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
  fi
  if ! command -v make >/dev/null 2>&1; then
    log "installing make (the Makefile builds the functions as deployed)"
    apt-get update -qq && apt-get install -y -qq make >/dev/null
  fi
  local stamp="$INFRA_VENV/.callfy-requirements"
  if [ ! -x "$INFRA_VENV/bin/sam" ] || [ ! -x "$INFRA_VENV/bin/checkov" ] \
    || ! cmp -s "$ROOT/scripts/requirements-infra.txt" "$stamp"; then
    log "installing aws-sam-cli, checkov, cfn-lint and cargo-lambda into $INFRA_VENV"
    python3 -m venv "$INFRA_VENV" 2>/dev/null || {
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$INFRA_VENV"
    }
    "$INFRA_VENV/bin/pip" install -q --upgrade pip >/dev/null
    "$INFRA_VENV/bin/pip" install -q -r "$ROOT/scripts/requirements-infra.txt"
    cp "$ROOT/scripts/requirements-infra.txt" "$stamp"
  fi
  # No usage reports from the tools (and no network needed for the checks).
  export SAM_CLI_TELEMETRY=0
}

# start_moto PORT: starts moto on 127.0.0.1:PORT unless one answers there; sets AWS_ENDPOINT_URL.
start_moto() {
  local port="$1"
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
  if curl -fsS "$AWS_ENDPOINT_URL/moto-api/" >/dev/null 2>&1; then
    return 0
  fi
  log "starting moto on 127.0.0.1:$port"
  # CALLFY_MOTO_SCRIPT: another entry point (the bench and the soak use a variant whose
  # transactions do not deep-copy the table).
  "$VENV/bin/python" "${CALLFY_MOTO_SCRIPT:-$ROOT/scripts/moto_server.py}" -H 127.0.0.1 -p "$port" >"$CALLFY_CACHE/moto-$port.log" 2>&1 &
  MOTO_PID=$!
  for _ in $(seq 1 100); do
    if curl -fsS "$AWS_ENDPOINT_URL/moto-api/" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  echo "moto did not start; see $CALLFY_CACHE/moto-$port.log" >&2
  exit 1
}

# Prism (npm) serves Twilio's OpenAPI spec and rejects requests that break it.
ensure_prism() {
  local dir="$CALLFY_CACHE/prism"
  if [ ! -x "$dir/node_modules/.bin/prism" ] || ! cmp -s "$ROOT/scripts/prism/package-lock.json" "$dir/package-lock.json"; then
    if ! command -v npm >/dev/null 2>&1; then
      log "installing nodejs and npm"
      apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
    fi
    log "installing Prism into $dir"
    mkdir -p "$dir"
    cp "$ROOT/scripts/prism/package.json" "$ROOT/scripts/prism/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --silent --no-audit --no-fund >/dev/null)
  fi
}

# Headless Chromium (Debian's package) for the report page's browser test (tests/admin.rs).
ensure_chromium() {
  if [ ! -x /usr/bin/chromium ]; then
    log "installing chromium"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  export CALLFY_CHROMIUM=/usr/bin/chromium
}

# start_prism PORT: Prism's mock of Twilio's API on 127.0.0.1:PORT, in the background.
start_prism() {
  local port="$1"
  "$CALLFY_CACHE/prism/node_modules/.bin/prism" mock -h 127.0.0.1 -p "$port" \
    "$ROOT/tools/callfy-local/twilio/twilio_api_v2010.json" >"$CALLFY_CACHE/prism-$port.log" 2>&1 &
  PRISM_PID=$!
  export CALLFY_PRISM_URL="http://127.0.0.1:$port"
}

wait_prism() {
  for _ in $(seq 1 300); do
    if grep -q "Prism is listening" "$CALLFY_CACHE/prism-${CALLFY_PRISM_URL##*:}.log" 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  echo "Prism did not start; see $CALLFY_CACHE/prism-${CALLFY_PRISM_URL##*:}.log" >&2
  exit 1
}

stop_prism() {
  if [ -n "${PRISM_PID:-}" ]; then
    kill "$PRISM_PID" 2>/dev/null || true
  fi
}

stop_moto() {
  if [ -n "${MOTO_PID:-}" ]; then
    kill "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
  fi
}
