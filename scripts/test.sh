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

step "Python packages for the integration and chart tests (.venv)"
python_modules="import rocketmq, helm_python, kubernetes_validate"
if ! .venv/bin/python -c "$python_modules" >/dev/null 2>&1; then
  if ! python3 -m venv .venv; then
    # Debian's python3 ships venv separately.
    apt_install python3-venv
    python3 -m venv .venv
  fi
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi
.venv/bin/python -c "$python_modules; print('rocketmq-python-client, helm-python-sdk, kubernetes-validate ready')"

step "nats-server for the benchmark harness test (JetStream side by side)"
ensure_nats_server

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
