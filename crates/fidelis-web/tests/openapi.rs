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

/// The constraints a client generator reads: enums, id lengths and patterns, bounds on
/// `limit`, instants as `date-time`.
#[test]
fn constraints_are_in_the_document_not_only_in_prose() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    let resolve = |v: &Value| -> Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => schemas[r.trim_start_matches("#/components/schemas/")].clone(),
            None => v.clone(),
        }
    };
    let enum_of = |schema: &str, field: &str| -> Vec<String> {
        let property = resolve(&schemas[schema]["properties"][field]);
        let values = property["enum"].as_array().cloned().unwrap_or_default();
        values
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    assert!(enum_of("TokenRequest", "role").contains(&"program_manager".to_owned()));
    assert!(enum_of("UserRequest", "role").contains(&"admin".to_owned()));
    assert_eq!(
        enum_of("StatusRequest", "status"),
        ["active", "suspended", "closed"]
    );
    assert_eq!(enum_of("GroupRequest", "redeem"), ["owner", "any_member"]);
    for (schema, field) in [
        ("JobsRequest", "as_of"),
        ("AssignTierRequest", "valid_until"),
    ] {
        let property = &schemas[schema]["properties"][field];
        assert_eq!(
            property["format"], "date-time",
            "{schema}.{field}: {property}"
        );
    }
    for (schema, field, max) in [
        ("TransferRequest", "to", 128),
        ("EnrollRequest", "member", 128),
        ("RedemptionRequest", "currency", 32),
    ] {
        let property = &schemas[schema]["properties"][field];
        assert_eq!(property["minLength"], 1, "{schema}.{field}");
        assert_eq!(property["maxLength"], max, "{schema}.{field}");
        assert!(property["pattern"].is_string(), "{schema}.{field}");
    }
    let balances =
        &doc["paths"]["/api/v1/programs/{program}/members/{member}/balances"]["get"]["parameters"];
    let ledger =
        &doc["paths"]["/api/v1/programs/{program}/members/{member}/ledger"]["get"]["parameters"];
    let param = |params: &Value, name: &str| -> Value {
        params
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no parameter {name}"))["schema"]
            .clone()
    };
    assert_eq!(param(balances, "program")["pattern"], "^[a-z0-9-]+$");
    assert_eq!(param(balances, "member")["maxLength"], 128);
    assert_eq!(param(balances, "as_of")["format"], "date-time");
    assert_eq!(param(ledger, "limit")["minimum"], 1);
    assert_eq!(param(ledger, "limit")["maximum"], 500);
}

/// Links: from a created member to its reads, from a posted journal to its cancellation.
#[test]
fn created_resources_link_to_what_comes_next() {
    let doc = document();
    let created = |path: &str| doc["paths"][path]["post"]["responses"]["201"]["links"].clone();
    let member = created("/api/v1/programs/{program}/members");
    assert_eq!(
        member["balances"]["parameters"]["member"],
        "$response.body#/member"
    );
    assert!(member["balances"]["operationId"].is_string(), "{member}");
    let journal = created("/api/v1/programs/{program}/journals");
    assert_eq!(
        journal["cancel"]["parameters"]["external_id"],
        "$response.body#/external_id"
    );
    let operation_ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    for link in [&member["balances"], &journal["cancel"], &journal["journal"]] {
        assert!(
            operation_ids.contains(&link["operationId"].as_str().unwrap()),
            "{link}"
        );
    }
}
