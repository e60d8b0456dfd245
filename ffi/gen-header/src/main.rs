//! Writes the C header of libqkd (`include/qkd.h`) from the sources of `qkd-ffi`, with the
//! exactly pinned cbindgen library and `ffi/cbindgen.toml`, so every run gives the same bytes.
//!
//! The header also defines `QKD_VERSION_MAJOR`, `_MINOR`, `_PATCH` and `QKD_VERSION_STRING`:
//! the workspace version, which is also what `qkd_version()` returns.
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
    let mut config = match cbindgen::Config::from_file(ffi_dir.join("cbindgen.toml")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gen-header: cannot read ffi/cbindgen.toml: {e}");
            return ExitCode::FAILURE;
        }
    };
    config.after_includes = Some(version_macros());
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

/// The version macros: this crate shares the workspace version with `qkd-ffi`.
fn version_macros() -> String {
    format!(
        "\n/* The version of this header; qkd_version() returns the library's. */\n\
         #define QKD_VERSION_MAJOR {}\n#define QKD_VERSION_MINOR {}\n#define QKD_VERSION_PATCH {}\n\
         #define QKD_VERSION_STRING \"{}\"\n",
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
        env!("CARGO_PKG_VERSION"),
    )
}
