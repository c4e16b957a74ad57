//! Build script shared by every function crate: link a glibc build of the Lambda binary (`cargo
//! build`; the benchmark's comparison row) as a position-dependent executable. The
//! deployed builds are static musl binaries (../Makefile), which zig links position-dependent
//! already. A PIE of this size carries ~47 000 relative relocations that the dynamic loader
//! writes on every cold start (about a fifth of init, measured in docs/performance.md); a non-PIE
//! binary has them resolved at link time. The trade-off, taken knowingly: the executable's own
//! image is not address-randomised (stack, heap and shared libraries still are), and each
//! function runs alone in its Firecracker micro-VM.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=../no-pie.rs");
}
