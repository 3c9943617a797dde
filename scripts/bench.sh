#!/usr/bin/env bash
# The side-by-side benchmark in one command: installs nats-server if missing (Debian's 2.9.10, and
# the current release 2.15.1 into .venv), builds Weir and the harness optimised, then runs every
# case of the suite on Weir and on both JetStreams, interleaved, three times, and prints a table
# of medians with the Weir/JetStream ratios (also written to target/bench/results.md). Extra arguments go to `weir-bench compare`, e.g.
#   scripts/bench.sh --only publish --only pubsub --repetitions 5
#   scripts/bench.sh --backlog-gib 10        # adds the deep-backlog case
# Data lives under target/bench/scratch, on the disk being measured (not a tmpfs).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

step "nats-server: Debian's (2.9) and a current release (.venv)"
ensure_nats_server
ensure_venv

step "build (release)"
cargo build --release --locked -p weir-bench -p weir-sidecar

step "benchmark"
mkdir -p target/bench
target/release/weir-bench compare --scratch target/bench/scratch --markdown target/bench/results.md \
  --nats-server "$(command -v nats-server)" --nats-server .venv/bin/nats-server "$@"
