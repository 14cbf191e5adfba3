//! Every example machine config in `configs/machine/` parses, and every
//! file in `configs/machine/invalid/` is refused with the error its
//! `# expect-error:` line names.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};

use nodeagent::config::{ConfigOrigin, parse};

fn dir(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs/machine")
        .join(rel)
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_config_parses() {
    let files = toml_files(&dir(""));
    assert!(
        files.len() >= 4,
        "expected the example configs, found {files:?}"
    );
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        if let Err(e) = parse(&bytes, &ConfigOrigin::Esp(path.clone())) {
            panic!("{}", nodeagent::error_chain(&e));
        }
    }
}

#[test]
fn every_invalid_config_is_refused_with_the_expected_key_and_message() {
    let files = toml_files(&dir("invalid"));
    assert!(!files.is_empty());
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let expected = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect-error: "))
            .unwrap_or_else(|| panic!("{} has no `# expect-error:` line", path.display()));
        let origin =
            ConfigOrigin::FwCfg("/sys/firmware/qemu_fw_cfg/by_name/opt/cairn/config/raw".into());
        let error = parse(text.as_bytes(), &origin).unwrap_err();
        let message = nodeagent::error_chain(&error);
        assert!(
            message.starts_with(&format!("opt/cairn/config (fw_cfg): {expected}")),
            "{}: got {message:?}, expected it to start with {expected:?}",
            path.display()
        );
        let key = expected.split(": ").next().unwrap();
        assert_eq!(error.key_path(), Some(key), "{}", path.display());
    }
}
