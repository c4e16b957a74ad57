//! The step binaries between hello-world and a function are linked as the functions are
//! (non-PIE, functions/no-pie.rs), so the step table shows what each part adds; the hello-world
//! baseline stays a default build, as anyone would write it.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        for bin in ["hello-sdk", "hello-sdk-log"] {
            println!("cargo:rustc-link-arg-bin={bin}=-no-pie");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
