//! `weir-operator`: reconciles `Topic` and `ConsumerGroup` resources into broker StatefulSets.
//!
//! The controllers are not written yet (see the operator issue); until then the binary only reports its
//! version so that packaging and the chart can be built around it.

use clap::Parser;

/// Command line of the operator.
#[derive(Debug, Parser)]
#[command(name = "weir-operator", version, about = "Weir Kubernetes operator (controllers not yet implemented)")]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!(
        "weir-operator {}: the controllers are not implemented yet; run `weir-sidecar standalone` for a broker",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
