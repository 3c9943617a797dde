//! Compiles every `.proto` file under this crate's directory into Rust (messages, tonic servers and
//! clients) with `protox`, so no system `protoc` is needed, and saves the encoded `FileDescriptorSet`
//! for gRPC reflection.
//!
//! New `.proto` files (e.g. `weir/admin/v1/admin.proto`) are found by walking the directory; nothing here
//! needs editing when one is added. Import paths are relative to this crate's directory.

use std::path::{Path, PathBuf};
use std::{env, fs, io};

use prost::Message as _;

/// Directories of this crate that never hold `.proto` files.
const SKIP_DIRS: &[&str] = &["src", "tests", "benches", "examples", "target"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    // Watch the whole crate directory: this also catches a new top-level namespace directory, which a
    // watch on the existing proto directories alone would miss.
    println!("cargo:rerun-if-changed={}", root.display());

    let mut protos = Vec::new();
    find_protos(&root, &root, &mut protos)?;
    protos.sort();
    if protos.is_empty() {
        return Err(format!("no .proto files under {}", root.display()).into());
    }

    // Includes the imported well-known types (google/protobuf/*), which reflection clients need.
    let fds = protox::compile(&protos, [&root])?;
    fs::write(out_dir.join("file_descriptor_set.bin"), fds.encode_to_vec())?;

    // The well-known types stay in the set (prost-build needs their descriptors) but map to
    // `prost_types`, so no code is generated for them.
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // `bytes` fields (Message.body) become `bytes::Bytes`: decoded without a copy.
        .bytes(".")
        // prost's codec, with a send's decoding buffer sized from the sends before it (see the module).
        .codec_path("crate::codec::ProstCodec")
        // Written by hand, so a broker can send a message it encoded itself (see the module).
        .extern_path(".apache.rocketmq.v2.ReceiveMessageResponse", "crate::receive_response::ReceiveMessageResponse")
        .compile_fds(fds)?;
    Ok(())
}

/// Collects the paths, relative to `root` and with `/` separators, of every `.proto` file below `dir`.
fn find_protos(root: &Path, dir: &Path, out: &mut Vec<String>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.file_type()?.is_dir() {
            let skipped = name.starts_with('.') || (dir == root && SKIP_DIRS.contains(&&*name));
            if !skipped {
                find_protos(root, &path, out)?;
            }
        } else if name.ends_with(".proto") {
            let relative = path
                .strip_prefix(root)
                .map_err(io::Error::other)?
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push(relative);
        }
    }
    Ok(())
}
