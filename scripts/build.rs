//! Build script (named by `package.build` in Cargo.toml, since the
//! project's top level is fixed).
//!
//! On Linux with glibc 2.36 or later, the binaries are linked with packed
//! relative relocations (`-z pack-relative-relocs`, DT_RELR). A
//! position-independent Rust binary carries one 24-byte relocation for
//! every pointer in its read-only data (84,137 of them here, 1.9 MiB), and
//! the loader reads them all at every start. Packed, they take 32 KB: the
//! stripped binary went from 27.5 to 25.6 MiB and `soloist chat`'s idle
//! RSS fell by 1.8 MiB (README, "Size and build"). The binary stays
//! position-independent (ASLR), which linking it at a fixed address would
//! not.
//!
//! A binary linked so refuses to start on a glibc older than 2.36, so the
//! option is only used when this machine's glibc (`getconf
//! GNU_LIBC_VERSION`) is that recent and the build is not a cross build.
//! `SOLOIST_PLAIN_RELOCS=1` turns it off, for a binary meant to be copied
//! to an older system. It needs GNU ld 2.38 or later, lld or mold; an older
//! GNU ld warns that it ignores the option.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=scripts/build.rs");
    println!("cargo:rerun-if-env-changed=SOLOIST_PLAIN_RELOCS");
    if packed_relocations_are_wanted() && this_glibc_reads_packed_relocations() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

fn packed_relocations_are_wanted() -> bool {
    let var = |key: &str| std::env::var(key).unwrap_or_default();
    let native = var("HOST") == var("TARGET");
    let linux_gnu = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    native && linux_gnu && var("SOLOIST_PLAIN_RELOCS").is_empty()
}

/// glibc 2.36 is the first whose loader reads DT_RELR.
fn this_glibc_reads_packed_relocations() -> bool {
    let Ok(output) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    // "glibc 2.36"
    let text = String::from_utf8_lossy(&output.stdout);
    let Some((major, minor)) = text
        .trim()
        .strip_prefix("glibc ")
        .and_then(|v| v.split_once('.'))
    else {
        return false;
    };
    let minor: u32 = minor
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    match major.parse::<u32>() {
        Ok(major) => (major, minor) >= (2, 36),
        Err(_) => false,
    }
}
