//! Writes the CRD YAML files of Weir's custom resources.
//!
//! ```text
//! cargo run -p weir-crds --bin crdgen                 # (re)write crds/weir.dev_*.yaml
//! cargo run -p weir-crds --bin crdgen -- --check      # exit 1 if they are stale
//! cargo run -p weir-crds --bin crdgen -- --out-dir charts/weir/crds
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use weir_crds::generate::{REGENERATE_COMMAND, generated_files};

fn main() -> ExitCode {
    let mut out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut check = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => check = true,
            "--out-dir" => match args.next() {
                Some(dir) => out_dir = PathBuf::from(dir),
                None => {
                    eprintln!("crdgen: --out-dir needs a directory");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("usage: crdgen [--check] [--out-dir DIR]");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("crdgen: unknown argument {other:?}; usage: crdgen [--check] [--out-dir DIR]");
                return ExitCode::from(2);
            }
        }
    }

    let mut stale = false;
    for (name, contents) in generated_files() {
        let path = out_dir.join(name);
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() == Some(contents.as_str()) {
            println!("{}: up to date", path.display());
            continue;
        }
        if check {
            eprintln!("{}: stale; run `{REGENERATE_COMMAND}`", path.display());
            stale = true;
            continue;
        }
        if let Err(e) = std::fs::write(&path, contents) {
            eprintln!("crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("{}: written", path.display());
    }
    if stale { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
