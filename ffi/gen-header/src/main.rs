//! Writes the C header of libqkd (`include/qkd.h`) from the sources of `qkd-ffi`, with the
//! exactly pinned cbindgen library and `ffi/cbindgen.toml`, so every run gives the same bytes.
//!
//! Usage: `cargo run -p qkd-ffi-gen-header [-- OUTPUT]`. Without an argument the committed
//! header `include/qkd.h` is rewritten; with one, the header goes to `OUTPUT` (the test script
//! writes to a temporary file and compares it with the committed one).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let ffi_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| ffi_dir.join("../include/qkd.h"));
    let config = match cbindgen::Config::from_file(ffi_dir.join("cbindgen.toml")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gen-header: cannot read ffi/cbindgen.toml: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bindings = match cbindgen::Builder::new()
        .with_config(config)
        .with_src(ffi_dir.join("src/lib.rs"))
        .generate()
    {
        Ok(b) => b,
        Err(e) => {
            eprintln!("gen-header: cbindgen failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    bindings.write_to_file(&out);
    eprintln!("gen-header: wrote {}", out.display());
    ExitCode::SUCCESS
}
