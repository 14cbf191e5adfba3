//! The OpenAPI 3.1 document of the API, built from [`ROUTES`] and the
//! JSON schemas of the body types.
//!
//! Access travels in two vendor extensions per operation: `x-cairn-access`
//! (`certificate`, `setup_token` for a node in maintenance mode, or
//! `join_token` for a node asking a member to admit it) and, for
//! certificate routes, `x-cairn-role` (the least role the certificate must
//! carry). Tests and tools walk the document through these.

use schemars::generate::SchemaSettings;
use schemars::{Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::routes::{ROUTES, Route, SchemaFn, Success, error_schema};
use crate::types::OCI_ARCHIVE;
use crate::{API_PORT, ErrorCode, NDJSON};

/// The committed document's path relative to this crate's manifest.
pub const COMMITTED_PATH: &str = "openapi.json";

/// The document, ready to serialize.
pub fn document() -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    settings.meta_schema = None;
    let mut generator = SchemaGenerator::new(settings);

    let mut paths = Map::new();
    for route in ROUTES {
        let item = paths
            .entry(route.path)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = item {
            item.insert(
                route.method.as_str().to_ascii_lowercase(),
                operation(route, &mut generator),
            );
        }
    }
    let schemas = generator.take_definitions(true);

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Cairn node API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "Served by cairnd on port {API_PORT} over TLS 1.3. A member node requires a \
                 client certificate from the cluster CA on the operations whose x-cairn-access \
                 is certificate; its organisation (cairn:reader, cairn:operator, cairn:admin) \
                 must reach the operation's x-cairn-role. A node in maintenance mode serves only \
                 the setup_token operations, authorised by the setup token in the body. A member \
                 serves join_token operations to nodes that present a join token in the body. \
                 Every error is an ApiError with a stable code."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "cluster_client_certificate": {
                    "type": "mutualTLS",
                    "description": "A client certificate issued by the cluster CA.",
                },
            },
        },
    })
}

/// The document as committed: pretty JSON with a trailing newline.
pub fn document_text() -> String {
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}

fn reference(f: SchemaFn, generator: &mut SchemaGenerator) -> Value {
    Schema::to_value(f(generator))
}

fn operation(route: &Route, generator: &mut SchemaGenerator) -> Value {
    let mut op = Map::new();
    op.insert("operationId".into(), route.operation.into());
    op.insert("summary".into(), route.summary.into());
    op.insert("x-cairn-access".into(), route.access.as_str().into());
    if let Some(role) = route.access.role() {
        op.insert("x-cairn-role".into(), role.as_str().into());
        op.insert(
            "security".into(),
            json!([{ "cluster_client_certificate": [] }]),
        );
    } else {
        op.insert("security".into(), json!([]));
    }
    let mut parameters = path_parameters(route.path);
    if let Some(query) = route.query
        && let Value::Array(query) = query_parameters(query, generator)
    {
        parameters.extend(query);
    }
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }
    if let Some(request) = route.request {
        op.insert(
            "requestBody".into(),
            json!({
                "required": true,
                "content": { "application/json": { "schema": reference(request, generator) } },
            }),
        );
    }
    if crate::routes::ARCHIVE_UPLOADS.contains(&route.operation) {
        op.insert(
            "requestBody".into(),
            json!({
                "required": true,
                "content": { OCI_ARCHIVE: { "schema": { "type": "string", "format": "binary" } } },
            }),
        );
    }
    let mut responses = Map::new();
    match route.success {
        Success::Json { status, body } => {
            responses.insert(
                status.to_string(),
                json!({
                    "description": "Success",
                    "content": { "application/json": { "schema": reference(body, generator) } },
                }),
            );
        }
        Success::Archive => {
            responses.insert(
                "200".into(),
                json!({
                    "description": "Success: an OCI image layout as one tar",
                    "content": { OCI_ARCHIVE: { "schema": { "type": "string", "format": "binary" } } },
                }),
            );
        }
        Success::NdJson { line } => {
            responses.insert(
                "200".into(),
                json!({
                    "description": "Success: one JSON object per line",
                    "content": { NDJSON: { "schema": reference(line, generator) } },
                }),
            );
        }
    }
    let error = reference(error_schema, generator);
    let mut codes: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.status()).collect();
    codes.sort_unstable();
    codes.dedup();
    for status in codes {
        let names: Vec<String> = ErrorCode::ALL
            .iter()
            .filter(|c| c.status() == status)
            .filter_map(|c| serde_json::to_value(c).ok())
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        responses.insert(
            status.to_string(),
            json!({
                "description": format!("Refused: {}", names.join(", ")),
                "content": { "application/json": { "schema": error.clone() } },
            }),
        );
    }
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

/// One required string parameter per `{name}` in the path.
fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": { "type": "string" },
            })
        })
        .collect()
}

/// Turns a query struct's schema into OpenAPI parameters, one per field.
fn query_parameters(query: SchemaFn, generator: &mut SchemaGenerator) -> Value {
    // Inline, not a reference: parameters need the struct's properties.
    let mut inline = SchemaGenerator::new(generator.settings().clone());
    let schema = Schema::to_value(query(&mut inline));
    let resolved = match schema.get("$ref").and_then(Value::as_str) {
        Some(pointer) => {
            let name = pointer.rsplit('/').next().unwrap_or_default();
            inline.definitions().get(name).cloned().unwrap_or(schema)
        }
        None => schema,
    };
    let required: Vec<&str> = resolved
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut params = Vec::new();
    if let Some(properties) = resolved.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            let mut property = property.clone();
            let description = property
                .as_object_mut()
                .and_then(|p| p.remove("description"))
                .unwrap_or(Value::Null);
            params.push(json!({
                "name": name,
                "in": "query",
                "required": required.contains(&name.as_str()),
                "description": description,
                "schema": property,
            }));
        }
    }
    Value::Array(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_appears_with_its_access() {
        let doc = document();
        for route in ROUTES {
            let op = &doc["paths"][route.path][route.method.as_str().to_ascii_lowercase()];
            assert_eq!(op["operationId"], route.operation);
            assert_eq!(op["x-cairn-access"], route.access.as_str());
            match route.access.role() {
                Some(role) => assert_eq!(op["x-cairn-role"], role.as_str()),
                None => assert!(op.get("x-cairn-role").is_none()),
            }
            assert_eq!(
                op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ApiError"
            );
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = serde_json::to_string(&doc).unwrap();
        for piece in text.split("\"$ref\":\"").skip(1) {
            let target = piece.split('"').next().unwrap();
            let name = target.strip_prefix("#/components/schemas/").unwrap();
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "dangling {target}"
            );
        }
    }

    #[test]
    fn path_placeholders_become_path_parameters() {
        let doc = document();
        let params = doc["paths"]["/v1/cluster/tokens/{id}/revoke"]["post"]["parameters"]
            .as_array()
            .unwrap();
        assert_eq!(params.len(), 1);
        assert_eq!(params[0]["name"], "id");
        assert_eq!(params[0]["in"], "path");
    }

    #[test]
    fn log_query_fields_become_query_parameters() {
        let doc = document();
        let params = doc["paths"]["/v1/node/logs"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let names: Vec<_> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["boot", "follow", "tail"]);
        assert!(params.iter().all(|p| p["in"] == "query"));
    }
}
