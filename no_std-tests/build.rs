//! Puts `memory.x` on the linker's search path (cortex-m-rt's `link.x`
//! includes it).
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    fs::copy("memory.x", out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    // defmt's linker script (its `.defmt` section of interned strings),
    // for the one binary that logs with defmt.
    println!("cargo:rustc-link-arg-bin=defmt_log=-Tdefmt.x");
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
}
