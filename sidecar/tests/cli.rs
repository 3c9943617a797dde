//! The `weir-sidecar` command line: bad manifests and busy ports are reported in plain words and the
//! process exits non-zero instead of starting half-configured.

use std::process::Command;

fn sidecar(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weir-sidecar")).args(args).output().expect("run weir-sidecar")
}

#[test]
fn invalid_manifest_is_reported_with_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: orders}\nspec: {partitions: 0}\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let out = sidecar(&["standalone", "--data-dir", data.to_str().unwrap(), "-f", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml") && err.contains("partitions"), "{err}");
}

#[test]
fn busy_port_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = sidecar(&[
        "standalone",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--listen",
        &addr,
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr) && err.contains("binding the gRPC port"), "{err}");
}

#[test]
fn bad_flag_values_name_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = sidecar(&["standalone", "--data-dir", dir.path().to_str().unwrap(), "--segment-size", "lots"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--segment-size"), "{err}");
}
