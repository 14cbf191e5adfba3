//! The Cairn userland binaries that go into the initramfs, the `cairn`
//! client that ships next to the image, and the check that they really are
//! static.
//!
//! The initramfs has no dynamic loader and no libc, so a binary with a
//! `PT_INTERP` program header or a `DT_NEEDED` entry would fail at exec
//! with a bare ENOENT. The check reads the ELF headers and refuses such a
//! binary at build time instead. (A glibc `crt-static` build is a
//! static-PIE: it has a dynamic section for self-relocation but needs
//! nothing, which is fine.)
//!
//! The client is built from the same tree in the same build, so the `cairn`
//! next to an image always speaks that image's API. It is static for the same
//! reason: it runs on whatever machine the operator copies it to.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use object::Endianness;
use object::elf;
use object::read::elf::{Dyn, FileHeader, ProgramHeader};

use crate::tools::{HostTool, ToolError};

/// The target triple the static binaries are built for.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";
/// The cargo profile the shipped binaries are built with (see the
/// workspace `Cargo.toml`).
pub const PROFILE: &str = "image";
/// The binary that becomes `/init`.
pub const INIT_BIN: &str = "cairn-init";
/// The node agent, `/usr/bin/cairnd`.
pub const AGENT_BIN: &str = "cairnd";
/// The per-container shim, `/usr/bin/cairn-shim`.
pub const SHIM_BIN: &str = "cairn-shim";
/// The operator's client; shipped beside the image, not inside it.
pub const CLI_BIN: &str = "cairn";

#[derive(Debug, thiserror::Error)]
pub enum BinariesError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an x86_64 ELF executable")]
    NotElf {
        path: PathBuf,
        #[source]
        source: Option<object::read::Error>,
    },
    #[error(
        "{path} is dynamically linked ({reason}); build it with RUSTFLAGS=\"-C target-feature=+crt-static\""
    )]
    Dynamic { path: PathBuf, reason: String },
    #[error("building the static binaries failed")]
    Cargo(#[source] ToolError),
    #[error("cargo build finished but did not report the executable {0}")]
    NotProduced(&'static str),
    #[error("cannot run cargo")]
    CargoSpawn(#[source] std::io::Error),
}

/// How an ELF file links, as far as running it in the initramfs matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linkage {
    Static,
    /// Has an interpreter (`PT_INTERP`): needs ld.so.
    Interpreter(String),
    /// Lists shared libraries it needs (`DT_NEEDED`).
    NeedsLibraries(usize),
}

/// Reads the program headers of an x86_64 ELF image. Pure: takes bytes.
pub fn elf_linkage(data: &[u8]) -> Result<Linkage, Option<object::read::Error>> {
    let header = elf::FileHeader64::<Endianness>::parse(data).map_err(Some)?;
    let endian = header.endian().map_err(Some)?;
    if header.e_machine(endian) != elf::EM_X86_64 {
        return Err(None);
    }
    let e_type = header.e_type(endian);
    if e_type != elf::ET_EXEC && e_type != elf::ET_DYN {
        return Err(None);
    }
    let segments = header.program_headers(endian, data).map_err(Some)?;
    for seg in segments {
        if seg.p_type(endian) == elf::PT_INTERP {
            let raw = seg.data(endian, data).map_err(|()| None)?;
            let interp = String::from_utf8_lossy(raw)
                .trim_end_matches('\0')
                .to_owned();
            return Ok(Linkage::Interpreter(interp));
        }
    }
    for seg in segments {
        if let Some(dynamic) = seg.dynamic(endian, data).map_err(Some)? {
            let needed = dynamic
                .iter()
                .filter(|d| d.d_tag(endian) == u64::from(elf::DT_NEEDED))
                .count();
            if needed > 0 {
                return Ok(Linkage::NeedsLibraries(needed));
            }
        }
    }
    Ok(Linkage::Static)
}

/// Reads `path` and refuses it unless it is a static x86_64 executable.
pub fn read_static_binary(path: &Path) -> Result<Vec<u8>, BinariesError> {
    let data = std::fs::read(path).map_err(|source| BinariesError::Read {
        path: path.to_owned(),
        source,
    })?;
    match elf_linkage(&data) {
        Ok(Linkage::Static) => Ok(data),
        Ok(Linkage::Interpreter(interp)) => Err(BinariesError::Dynamic {
            path: path.to_owned(),
            reason: format!("interpreter {interp}"),
        }),
        Ok(Linkage::NeedsLibraries(n)) => Err(BinariesError::Dynamic {
            path: path.to_owned(),
            reason: format!("{n} DT_NEEDED libraries"),
        }),
        Err(source) => Err(BinariesError::NotElf {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The two binaries the Cairn initramfs carries, and the client built with
/// them.
#[derive(Debug, Clone)]
pub struct CairnBinaries {
    pub init: Vec<u8>,
    pub agent: Vec<u8>,
    pub shim: Vec<u8>,
    pub cli: Vec<u8>,
    pub init_path: PathBuf,
    pub agent_path: PathBuf,
    pub shim_path: PathBuf,
    pub cli_path: PathBuf,
}

/// Takes prebuilt binaries from `dir` (`cairn-init`, `cairnd`,
/// `cairn-shim`, `cairn`).
pub fn from_dir(dir: &Path) -> Result<CairnBinaries, BinariesError> {
    let init_path = dir.join(INIT_BIN);
    let agent_path = dir.join(AGENT_BIN);
    let shim_path = dir.join(SHIM_BIN);
    let cli_path = dir.join(CLI_BIN);
    Ok(CairnBinaries {
        init: read_static_binary(&init_path)?,
        agent: read_static_binary(&agent_path)?,
        shim: read_static_binary(&shim_path)?,
        cli: read_static_binary(&cli_path)?,
        init_path,
        agent_path,
        shim_path,
        cli_path,
    })
}

/// Finds the workspace root: this crate lives at `<root>/crates/image-build`.
/// Falls back to `cargo locate-project --workspace` when the binary was
/// moved away from its source tree.
pub fn workspace_root() -> Option<PathBuf> {
    let from_manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if from_manifest.join("Cargo.toml").is_file() {
        return from_manifest.canonicalize().ok();
    }
    let cargo = HostTool::Cargo.locate().ok()?;
    let out = std::process::Command::new(cargo)
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .output()
        .ok()?;
    let manifest = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    manifest.parent().map(Path::to_owned)
}

/// Builds `init`, `nodeagent`, `shim` and `cli` as static binaries with cargo's
/// `image` profile (release with fat LTO) and returns them. Cargo's own output goes to our stderr so its progress
/// shows; the artifact paths come from its JSON messages, so a custom
/// `CARGO_TARGET_DIR` works too.
///
/// The client is built by a second cargo run on purpose: cargo unifies the
/// features of a shared dependency across every package of one run, so
/// the client's `reqwest` and `clap` features would be compiled into the
/// node's binaries too. Two runs build each the way `cargo build -p`
/// builds it alone.
pub fn build_with_cargo(workspace: &Path) -> Result<CairnBinaries, BinariesError> {
    let node = cargo_build_static(workspace, &["init", "nodeagent", "shim"])?;
    let init_path =
        executable_from_messages(&node, INIT_BIN).ok_or(BinariesError::NotProduced(INIT_BIN))?;
    let agent_path =
        executable_from_messages(&node, AGENT_BIN).ok_or(BinariesError::NotProduced(AGENT_BIN))?;
    let shim_path =
        executable_from_messages(&node, SHIM_BIN).ok_or(BinariesError::NotProduced(SHIM_BIN))?;
    let client = cargo_build_static(workspace, &["cli"])?;
    let cli_path =
        executable_from_messages(&client, CLI_BIN).ok_or(BinariesError::NotProduced(CLI_BIN))?;
    Ok(CairnBinaries {
        init: read_static_binary(&init_path)?,
        agent: read_static_binary(&agent_path)?,
        shim: read_static_binary(&shim_path)?,
        cli: read_static_binary(&cli_path)?,
        init_path,
        agent_path,
        shim_path,
        cli_path,
    })
}

/// One `cargo build --profile image --target TARGET -p <package>...` with
/// static linking; returns cargo's JSON messages.
fn cargo_build_static(workspace: &Path, packages: &[&str]) -> Result<String, BinariesError> {
    let cargo = HostTool::Cargo.locate().map_err(BinariesError::Cargo)?;
    let mut command = std::process::Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--profile", PROFILE, "--target", TARGET]);
    for package in packages {
        command.args(["-p", package]);
    }
    let output = command
        .arg("--message-format=json-render-diagnostics")
        // Only with an explicit --target do RUSTFLAGS skip build scripts
        // and proc macros, which cannot be linked statically.
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(BinariesError::CargoSpawn)?;
    if !output.status.success() {
        return Err(BinariesError::Cargo(ToolError::Failed {
            tool: HostTool::Cargo.name(),
            status: output.status,
            stderr: "see the cargo output above".to_owned(),
        }));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Picks the `executable` of the `compiler-artifact` message for binary
/// target `name` out of cargo's JSON lines.
pub fn executable_from_messages(json_lines: &str, name: &str) -> Option<PathBuf> {
    json_lines.lines().rev().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        if v.get("reason")?.as_str()? != "compiler-artifact" {
            return None;
        }
        let target = v.get("target")?;
        let is_bin = target
            .get("kind")?
            .as_array()?
            .iter()
            .any(|k| k.as_str() == Some("bin"));
        if !is_bin || target.get("name")?.as_str()? != name {
            return None;
        }
        v.get("executable")?.as_str().map(PathBuf::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 x86_64 header with the given program headers.
    fn elf_with(phdrs: &[(u32, &[u8])]) -> Vec<u8> {
        let phoff = 64u64;
        let data_off = phoff + 56 * phdrs.len() as u64;
        let mut out = vec![0u8; 64];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // 64-bit
        out[5] = 1; // little endian
        out[6] = 1; // version
        out[16..18].copy_from_slice(&elf::ET_DYN.to_le_bytes());
        out[18..20].copy_from_slice(&elf::EM_X86_64.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[32..40].copy_from_slice(&phoff.to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&u16::try_from(phdrs.len()).unwrap().to_le_bytes());
        let mut payload = Vec::new();
        for (p_type, body) in phdrs {
            let mut ph = vec![0u8; 56];
            ph[0..4].copy_from_slice(&p_type.to_le_bytes());
            let off = data_off + payload.len() as u64;
            ph[8..16].copy_from_slice(&off.to_le_bytes());
            ph[16..24].copy_from_slice(&off.to_le_bytes());
            ph[32..40].copy_from_slice(&(body.len() as u64).to_le_bytes());
            ph[40..48].copy_from_slice(&(body.len() as u64).to_le_bytes());
            out.extend_from_slice(&ph);
            payload.extend_from_slice(body);
        }
        out.extend_from_slice(&payload);
        out
    }

    fn dyn_entries(entries: &[(u64, u64)]) -> Vec<u8> {
        entries
            .iter()
            .flat_map(|(t, v)| t.to_le_bytes().into_iter().chain(v.to_le_bytes()))
            .collect()
    }

    #[test]
    fn an_executable_with_an_interpreter_is_dynamic() {
        let elf = elf_with(&[(elf::PT_INTERP, b"/lib64/ld-linux-x86-64.so.2\0")]);
        assert_eq!(
            elf_linkage(&elf).unwrap(),
            Linkage::Interpreter("/lib64/ld-linux-x86-64.so.2".to_owned())
        );
    }

    #[test]
    fn a_static_pie_with_a_dynamic_section_but_no_needed_is_static() {
        let dynamic = dyn_entries(&[(u64::from(elf::DT_FLAGS_1), 0), (0, 0)]);
        let elf = elf_with(&[(elf::PT_DYNAMIC, &dynamic)]);
        assert_eq!(elf_linkage(&elf).unwrap(), Linkage::Static);
    }

    #[test]
    fn a_dynamic_section_with_needed_libraries_is_dynamic() {
        let dynamic = dyn_entries(&[(u64::from(elf::DT_NEEDED), 1), (0, 0)]);
        let elf = elf_with(&[(elf::PT_DYNAMIC, &dynamic)]);
        assert_eq!(elf_linkage(&elf).unwrap(), Linkage::NeedsLibraries(1));
    }

    #[test]
    fn a_shell_script_is_not_an_elf() {
        assert!(elf_linkage(b"#!/bin/sh\necho hi\n").is_err());
    }

    #[test]
    fn the_host_cargo_itself_is_reported_dynamic() {
        // Debian's and rustup's cargo are dynamically linked; this proves the
        // check works on a real toolchain binary, not only on our fixtures.
        let cargo = HostTool::Cargo
            .locate()
            .expect("cargo is installed where tests run");
        let real = std::fs::canonicalize(&cargo).unwrap();
        assert!(matches!(
            read_static_binary(&real),
            Err(BinariesError::Dynamic { .. })
        ));
    }

    #[test]
    fn cargo_messages_yield_the_named_binary() {
        let lines = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"init"},"executable":null}
{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"cairn-init"},"executable":"/t/release/cairn-init"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            executable_from_messages(lines, "cairn-init"),
            Some(PathBuf::from("/t/release/cairn-init"))
        );
        assert_eq!(executable_from_messages(lines, "cairnd"), None);
    }
}
