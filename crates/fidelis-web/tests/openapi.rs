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
    // Tokens and users: one variant per kind of role, each with its own enum or const.
    for schema in ["TokenRequest", "UserRequest"] {
        let roles: Vec<String> = schemas[schema]["oneOf"]
            .as_array()
            .unwrap_or_else(|| panic!("{schema} is a oneOf"))
            .iter()
            .flat_map(|v| {
                let role = &v["properties"]["role"];
                let mut values: Vec<String> = role["enum"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect();
                values.extend(role["const"].as_str().map(str::to_owned));
                values
            })
            .collect();
        assert_eq!(
            roles,
            ["admin", "program_manager", "agent", "partner", "member"],
            "{schema}"
        );
    }
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
    // A cursor is what a previous page answered, and the document says its shape.
    assert_eq!(
        param(ledger, "cursor")["pattern"],
        "^[0-9]{1,18}:[0-9]{1,9}$"
    );
    // A batch holds at least one journal.
    assert_eq!(
        doc["paths"]["/api/v1/programs/{program}/journals/batch"]["post"]["requestBody"]["content"]
            ["application/x-ndjson"]["schema"]["minItems"],
        1
    );
}

/// A validator for the component `name` of the document.
fn validator(doc: &Value, name: &str) -> jsonschema::Validator {
    let root = serde_json::json!({
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"],
    });
    jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("{name} compiles: {e}"))
}

/// A journal is one of five shapes by its `type`, each with what it needs and without what
/// it does not take — what the server accepts, the document accepts, and the reverse.
#[test]
fn a_journal_is_one_of_five_shapes() {
    use serde_json::json;
    let doc = document();
    let journal = validator(&doc, "JournalRequest");
    let ok = |j: &Value| journal.is_valid(j);
    let id = json!({"external_id": "j1", "member": "m1"});
    let with = |fields: Value| {
        let mut j = id.clone();
        j.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        j
    };
    for good in [
        with(json!({"type": "purchase", "currency": "EUR", "amount": "79.90"})),
        with(json!({"type": "purchase", "currency": "EUR", "lines": [
            {"line_id": "1", "sku": "shoe", "amount": "40.00"},
            {"line_id": "2", "quantity": 2, "unit_price": "19.95"}]})),
        with(json!({"type": "review", "occurred_at": "2026-11-20T10:00:00Z"})),
        with(
            json!({"type": "refund", "original_external_id": "p1", "currency": "EUR", "amount": "10.00"}),
        ),
        with(
            json!({"type": "refund", "original_external_id": "p1", "lines": [{"line_id": "1", "quantity": 1}]}),
        ),
        with(json!({"type": "redemption", "currency": "points", "points": 500})),
        with(
            json!({"type": "adjustment", "currency": "points", "points": -20, "reason": "goodwill"}),
        ),
        with(json!({"type": "cancellation", "original_external_id": "p1"})),
    ] {
        assert!(ok(&good), "refused: {good}");
    }
    for bad in [
        with(json!({"currency": "EUR", "amount": "79.90"})),
        with(json!({"type": "purchase", "currency": "EUR", "amount": "79.90", "points": 5})),
        with(json!({"type": "purchase", "amount": "79.90"})),
        with(json!({"type": "purchase", "currency": "EUR", "amount": "79,90"})),
        with(
            json!({"type": "purchase", "currency": "EUR", "lines": [{"line_id": "1", "amount": "1.00", "unit_price": "1.00"}]}),
        ),
        with(json!({"type": "refund", "currency": "EUR", "amount": "10.00"})),
        with(
            json!({"type": "refund", "original_external_id": "p1", "currency": "EUR", "amount": "0.00"}),
        ),
        with(json!({"type": "redemption", "currency": "points"})),
        with(json!({"type": "redemption", "currency": "points", "points": 0})),
        with(
            json!({"type": "adjustment", "currency": "points", "points": 0, "reason": "goodwill"}),
        ),
        with(json!({"type": "adjustment", "currency": "points", "points": 5})),
        with(json!({"type": "cancellation"})),
        with(json!({"type": "cancellation", "original_external_id": "p1", "points": 5})),
        json!({"member": "m1", "type": "cancellation", "original_external_id": "p1"}),
    ] {
        assert!(!ok(&bad), "accepted: {bad}");
    }
}

/// Who a token or user is for follows from its role, in the document as on the server.
#[test]
fn tokens_name_what_their_role_needs() {
    use serde_json::json;
    let doc = document();
    let token = validator(&doc, "TokenRequest");
    for good in [
        json!({"name": "pos", "role": "agent", "program": "demo"}),
        json!({"name": "pos", "role": "partner", "program": "demo", "partner": "airline"}),
        json!({"name": "app", "role": "member", "program": "demo", "member": "C-1"}),
    ] {
        assert!(token.is_valid(&good), "refused: {good}");
    }
    for bad in [
        json!({"name": "pos", "role": "partner", "program": "demo"}),
        json!({"name": "pos", "role": "member", "member": "C-1"}),
        json!({"name": "pos", "role": "admin", "member": "C-1"}),
        json!({"name": "pos", "role": "owner"}),
        // Blank to the eye (a no-break space): the server refuses it, so does the document.
        json!({"name": "\u{a0}", "role": "agent"}),
    ] {
        assert!(!token.is_valid(&bad), "accepted: {bad}");
    }
    let user = validator(&doc, "UserRequest");
    let person =
        json!({"email": "ana@example.com", "password": "correct horse battery", "role": "admin"});
    assert!(user.is_valid(&person));
    let mut not_an_address = person.clone();
    not_an_address["email"] = json!("ana.example.com");
    assert!(!user.is_valid(&not_an_address));
}

/// The program definition is the core's JSON Schema, on `PUT` (JSON and YAML) and `GET`,
/// and every shipped template passes it.
#[test]
fn the_program_definition_has_its_schema() {
    let doc = document();
    let program = &doc["paths"]["/api/v1/programs/{program}"];
    let definition = "#/components/schemas/ProgramDefinition";
    for content in ["application/json", "application/yaml"] {
        assert_eq!(
            program["put"]["requestBody"]["content"][content]["schema"]["$ref"], definition,
            "{content}"
        );
    }
    assert_eq!(
        program["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        definition
    );
    let validator = validator(&doc, "ProgramDefinition");
    for template in fidelis_core::templates::TEMPLATES {
        let value: Value = yaml_serde::from_str(template.source).expect("YAML");
        assert!(validator.is_valid(&value), "{}", template.name);
    }
    assert!(!validator.is_valid(&serde_json::json!({"name": "no time zone"})));
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
