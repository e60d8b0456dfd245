//! Gives the shared library its SONAME, `libqkd.so.MAJOR`, on Linux: programs linked against
//! libqkd record that name, so a compatible release (same major version) can replace the file
//! underneath them. `scripts/install-libqkd.sh` installs the versioned file and its symlinks.

fn main() {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os == "linux" {
        let major = env!("CARGO_PKG_VERSION_MAJOR");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libqkd.so.{major}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
