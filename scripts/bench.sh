#!/usr/bin/env bash
# The side-by-side benchmark in one command: installs nats-server if missing, builds Weir and the
# harness optimised, then runs every case of the suite on Weir and on NATS JetStream, interleaved,
# three times, and prints a table of medians with the Weir/JetStream ratio (also written to
# target/bench/results.md). Extra arguments go to `weir-bench compare`, e.g.
#   scripts/bench.sh --only publish --only pubsub --repetitions 5
#   scripts/bench.sh --backlog-gib 10        # adds the deep-backlog case
# Data lives under target/bench/scratch, on the disk being measured (not a tmpfs).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

step "nats-server"
ensure_nats_server

step "build (release)"
cargo build --release --locked -p weir-bench -p weir-sidecar

step "benchmark"
mkdir -p target/bench
target/release/weir-bench compare --scratch target/bench/scratch --markdown target/bench/results.md "$@"
