//! Names the shared library for the dynamic linker: `libflux.so.<ABI major>`.
//!
//! A program linked against Flux records this soname and asks for it at run
//! time, so a newer library with the same ABI major replaces an older one
//! under every program, and one with another major never does. The name is
//! set here, at link time, so every build of the cdylib carries it: the one
//! `make install` installs and the one inside the Python package alike.

/// Raised when, and only when, the C ABI breaks (README, "C and C++"): a
/// function removed or renamed, a signature changed, a struct's layout or an
/// enum value changed. Adding functions, constants or enum values keeps it.
const ABI_MAJOR: u32 = 0;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    // ELF systems, whose linkers (GNU ld, gold, lld) take -soname. macOS names
    // a dylib with -install_name instead, and Windows has no soname.
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if matches!(
        os.as_str(),
        "linux" | "android" | "freebsd" | "netbsd" | "openbsd" | "dragonfly"
    ) {
        println!("cargo::rustc-cdylib-link-arg=-Wl,-soname,libflux.so.{ABI_MAJOR}");
    }
}
