//! Compiles the gRPC contract with a vendored protoc, so a fresh machine needs no apt step.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    // Small per-stream buffers: most streams are idle client sessions (see `codec`).
    tonic_prost_build::configure()
        .codec_path("crate::codec::SmallBuffers")
        // Yjs messages as `bytes::Bytes`: one committed update fans out to every client of
        // its document as the same shared buffer.
        .bytes(".codraft.docnode.v1")
        .compile_protos(&["proto/docnode.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/docnode.proto");
    Ok(())
}
