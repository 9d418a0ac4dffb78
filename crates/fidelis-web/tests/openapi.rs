//! The OpenAPI document: valid OpenAPI 3.1, and it lists every route, with the endpoints
//! API.md fixes under their exact names.

use serde_json::Value;

fn document() -> Value {
    serde_json::to_value(fidelis_web::openapi()).expect("the document serializes")
}

#[test]
fn the_document_is_valid_openapi_3_1() {
    let doc = document();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let text = serde_json::to_string(&doc).unwrap();
    let parsed = oas3::from_json(&text).expect("a valid OpenAPI 3.1 document");
    assert_eq!(parsed.info.title, "Fidelis");
    // Every $ref points at a schema that exists.
    let schemas = doc["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for reference in text.match_indices("\"$ref\":\"#/components/schemas/") {
        let rest = &text[reference.0 + reference.1.len()..];
        let name = &rest[..rest.find('"').unwrap()];
        assert!(schemas.contains_key(name), "dangling $ref to {name}");
    }
}

#[test]
fn the_fixed_endpoints_of_the_api_contract_are_listed() {
    let doc = document();
    let paths = doc["paths"].as_object().unwrap();
    let fixed = [
        ("put", "/api/v1/programs/{program}"),
        (
            "post",
            "/api/v1/programs/{program}/from-template/{template}",
        ),
        ("get", "/api/v1/programs/{program}"),
        ("post", "/api/v1/programs/{program}/members"),
        ("get", "/api/v1/programs/{program}/members/{member}"),
        (
            "get",
            "/api/v1/programs/{program}/members/{member}/balances",
        ),
        ("get", "/api/v1/programs/{program}/members/{member}/ledger"),
        ("post", "/api/v1/programs/{program}/journals"),
        ("post", "/api/v1/programs/{program}/journals/batch"),
        (
            "post",
            "/api/v1/programs/{program}/journals/{external_id}/cancel",
        ),
        (
            "post",
            "/api/v1/programs/{program}/members/{member}/redemptions",
        ),
        ("post", "/api/v1/programs/{program}/simulate"),
        ("post", "/api/v1/programs/{program}/jobs/run"),
        ("get", "/openapi.json"),
        ("get", "/api/v1/openapi.json"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
    ];
    for (method, path) in fixed {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not in the document"
        );
    }
    // Every operation says what it answers on success and how it fails.
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} documents no success"
            );
            if path.starts_with("/api/v1/") && !path.ends_with("openapi.json") {
                for status in ["400", "401", "403", "404", "422", "429"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path} does not document {status}"
                    );
                }
            }
        }
    }
}

/// OpenAPI 3.1 requires a `description` on every response object (and on every header
/// object's parent response); generators and strict validators refuse a document without.
#[test]
fn every_response_has_a_description() {
    let doc = document();
    let mut missing = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                let described = response
                    .get("description")
                    .and_then(Value::as_str)
                    .is_some_and(|d| !d.trim().is_empty());
                if !described && response.get("$ref").is_none() {
                    missing.push(format!("{method} {path} {status}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "responses without a description: {missing:#?}"
    );
}
