#!/usr/bin/env bash
# Runs every Weir test on a fresh machine: formatting, lints, unit tests, and the integration tests
# that start real weir-sidecar processes and drive them with the official RocketMQ SDKs.
# It installs what the tests need by itself and needs no input (CI runs it with CI=true, no stdin).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
cargo --version
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

step "Python SDK for the integration tests (.venv)"
if ! .venv/bin/python -c "import rocketmq" >/dev/null 2>&1; then
  if ! python3 -m venv .venv; then
    # Debian's python3 ships venv separately.
    sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq python3-venv
    python3 -m venv .venv
  fi
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi
.venv/bin/python -c "import rocketmq; print('rocketmq-python-client ready')"

step "formatting (cargo fmt --check)"
cargo fmt --all -- --check

step "lints (cargo clippy -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build the binaries the integration tests start"
cargo build --workspace --bins --locked

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  profile=default
  [ "${CI:-}" = "true" ] && profile=ci
  cargo nextest run --workspace --locked --profile "$profile"
else
  cargo test --workspace --locked
fi
