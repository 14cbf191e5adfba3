//! `SHA256SUMS`: one `<hex>  <relative path>` line per artifact, the format
//! `sha256sum -c` reads (two spaces: text mode, which is what GNU
//! coreutils writes by default on Linux).

use std::path::Path;

/// Renders SHA256SUMS from `(relative path, hex digest)` pairs, sorted by path.
pub fn sha256sums(entries: &[(String, String)]) -> String {
    let mut sorted: Vec<_> = entries.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted
        .into_iter()
        .map(|(path, sha)| format!("{sha}  {path}\n"))
        .collect()
}

/// Hashes a file as SHA-256, returning lower-case hex.
pub fn sha256_path(path: &Path) -> std::io::Result<String> {
    crate::deb::sha256_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_sorted_and_use_two_spaces() {
        let text = sha256sums(&[
            ("pxe/vmlinuz".to_owned(), "bb".to_owned()),
            ("cairn.raw".to_owned(), "aa".to_owned()),
        ]);
        assert_eq!(text, "aa  cairn.raw\nbb  pxe/vmlinuz\n");
    }

    #[test]
    fn sha256sum_accepts_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pxe")).unwrap();
        std::fs::write(dir.path().join("pxe/boot.ipxe"), b"#!ipxe\n").unwrap();
        let sha = sha256_path(&dir.path().join("pxe/boot.ipxe")).unwrap();
        std::fs::write(
            dir.path().join("SHA256SUMS"),
            sha256sums(&[("pxe/boot.ipxe".to_owned(), sha)]),
        )
        .unwrap();
        let status = std::process::Command::new("sha256sum")
            .args(["--quiet", "-c", "SHA256SUMS"])
            .current_dir(dir.path())
            .status()
            .expect("sha256sum (coreutils) runs");
        assert!(status.success());
    }
}
