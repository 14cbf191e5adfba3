//! The committed OpenAPI document must be what the code generates.
//!
//! After changing a route or a body type, regenerate it with
//! `CAIRN_UPDATE_OPENAPI=1 cargo test -p api --test openapi_drift` and
//! commit the result.

use std::path::Path;

#[test]
fn committed_openapi_document_matches_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(api::openapi::COMMITTED_PATH);
    let generated = api::openapi::document_text();
    if std::env::var_os("CAIRN_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(
        committed == generated,
        "{} is out of date with the routes and types; regenerate it with \
         `CAIRN_UPDATE_OPENAPI=1 cargo test -p api --test openapi_drift` and review the diff",
        path.display()
    );
}
