//! The OpenAPI document. utoipa derives it from the routes and their types; what a Rust
//! type cannot say is stated here, as JSON Schema, and replaces the derived schema:
//!
//! - `components.json`: a journal is one of five shapes by its `type` (`oneOf`), lines by
//!   amount or unit price, tokens and users by role, all with the constraints the server
//!   checks (lengths, patterns, ranges, fields a type does not take).
//! - the program definition is the core's JSON Schema
//!   ([`fidelis_core::program::DEFINITION_SCHEMA`]), its `$defs` moved into the components.

use serde_json::{Map, Value};
use utoipa::openapi::HttpMethod;

/// Schemas that replace (or add to) the derived ones.
const COMPONENTS: &str = include_str!("components.json");

/// The OpenAPI 3.1 document of the API, as served at `/openapi.json`.
pub fn openapi() -> Value {
    let mut doc = serde_json::to_value(generated()).expect("the derived document serializes");
    refine(&mut doc);
    doc
}

/// States in the document what the derived schemas cannot.
fn refine(doc: &mut Value) {
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    if let Ok(Value::Object(stated)) = serde_json::from_str::<Value>(COMPONENTS) {
        schemas.extend(stated);
    }
    schemas.remove("LineRequest");
    if let Some(profile) = schemas
        .get_mut("EnrollRequest")
        .and_then(|e| e.pointer_mut("/properties/profile"))
    {
        *profile = serde_json::json!({
            "anyOf": [{"type": "null"}, {"$ref": "#/components/schemas/MemberProfile"}],
        });
    }
    if let Ok(Value::Object(mut definition)) =
        serde_json::from_str::<Value>(fidelis_core::program::DEFINITION_SCHEMA)
    {
        let defs = match definition.remove("$defs") {
            Some(Value::Object(defs)) => defs,
            _ => Map::new(),
        };
        let names: Vec<String> = defs.keys().cloned().collect();
        for (name, mut schema) in defs {
            rewrite_refs(&mut schema, &names);
            schemas.insert(component_name(&name), schema);
        }
        definition.remove("$schema");
        definition.remove("$id");
        let mut definition = Value::Object(definition);
        rewrite_refs(&mut definition, &names);
        schemas.insert("ProgramDefinition".to_owned(), definition);
    }
    for (name, schema) in schemas.iter_mut() {
        name_variants(schema, name);
    }
    // A batch holds at least one line (an empty one is `empty_batch`).
    let journals = "/paths/~1api~1v1~1programs~1{program}~1journals~1batch/post/requestBody/content/application~1x-ndjson/schema";
    if let Some(Value::Object(batch)) = doc.pointer_mut(journals) {
        batch.insert("minItems".to_owned(), Value::from(1));
    }
    let openings = "/paths/~1api~1v1~1programs~1{program}~1members~1openings/post/requestBody/content/application~1x-ndjson/schema";
    if let Some(schema) = doc.pointer_mut(openings) {
        *schema = serde_json::json!({
            "type": "array",
            "minItems": 1,
            "items": {"type": "object", "description": "One member's opening state (see the README)"},
        });
    }
    let definition = serde_json::json!({"$ref": "#/components/schemas/ProgramDefinition"});
    let program = "/paths/~1api~1v1~1programs~1{program}";
    if let Some(content) = doc
        .pointer_mut(&format!("{program}/put/requestBody/content"))
        .and_then(Value::as_object_mut)
    {
        content.insert(
            "application/json".to_owned(),
            serde_json::json!({"schema": definition}),
        );
        content.insert(
            "application/yaml".to_owned(),
            serde_json::json!({"schema": definition}),
        );
    }
    if let Some(content) = doc.pointer_mut(&format!(
        "{program}/get/responses/200/content/application~1json"
    )) {
        *content = serde_json::json!({"schema": definition});
    }
}

/// Gives every object variant of a `oneOf` or `anyOf` a title unique in the document
/// (`TokenRequestPartner`): generated clients name their classes after titles, and two
/// variants both titled `Partner` would be one class.
fn name_variants(schema: &mut Value, prefix: &str) {
    let Value::Object(map) = schema else {
        return;
    };
    for key in ["oneOf", "anyOf"] {
        if let Some(Value::Array(variants)) = map.get_mut(key) {
            for (i, variant) in variants.iter_mut().enumerate() {
                if let Value::Object(v) = variant
                    && v.get("type").and_then(Value::as_str) == Some("object")
                {
                    let own = v
                        .get("title")
                        .and_then(Value::as_str)
                        .map_or_else(|| format!("Variant{}", i + 1), pascal);
                    v.insert("title".to_owned(), Value::String(format!("{prefix}{own}")));
                }
                name_variants(variant, prefix);
            }
        }
    }
    if let Some(Value::Object(properties)) = map.get_mut("properties") {
        for (name, property) in properties.iter_mut() {
            name_variants(property, &format!("{prefix}{}", pascal(name)));
        }
    }
    if let Some(items) = map.get_mut("items") {
        name_variants(items, &format!("{prefix}Item"));
    }
}

/// `per member_limit` → `PerMemberLimit`.
fn pascal(words: &str) -> String {
    words
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// The component a `$defs` entry of the program definition schema becomes.
fn component_name(def: &str) -> String {
    if def.starts_with("Program") {
        def.to_owned()
    } else {
        format!("Program{def}")
    }
}

/// Points `#/$defs/X` references at the components they were moved to.
fn rewrite_refs(value: &mut Value, names: &[String]) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get_mut("$ref")
                && let Some(name) = target.strip_prefix("#/$defs/")
                && names.iter().any(|n| n == name)
            {
                *target = format!("#/components/schemas/{}", component_name(name));
            }
            map.values_mut().for_each(|v| rewrite_refs(v, names));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_refs(v, names)),
        _ => {}
    }
}

/// The document utoipa derives from the routes, with the links a client (or a stateful
/// fuzzer) follows from what it created to what it can do next.
fn generated() -> utoipa::openapi::OpenApi {
    let mut doc = crate::routes::api()
        .merge(crate::routes::operations())
        .split_for_parts()
        .1;
    let member = "/api/v1/programs/{program}/members/{member}";
    let journal = "/api/v1/programs/{program}/journals/{external_id}";
    let member_links = [
        ("member", member.to_owned(), HttpMethod::Get),
        ("balances", format!("{member}/balances"), HttpMethod::Get),
        ("ledger", format!("{member}/ledger"), HttpMethod::Get),
    ];
    let journal_links = [
        ("journal", journal.to_owned(), HttpMethod::Get),
        ("cancel", format!("{journal}/cancel"), HttpMethod::Post),
    ];
    // What a POST creates (named by a field of its 201 answer) and where that leads.
    let created: [(&str, &[Target], &str); 4] = [
        (
            "/api/v1/programs/{program}/members",
            &member_links,
            "member",
        ),
        (
            "/api/v1/programs/{program}/journals",
            &journal_links,
            "external_id",
        ),
        (
            "/api/v1/programs/{program}/members/{member}/redemptions",
            &journal_links,
            "external_id",
        ),
        (
            "/api/v1/programs/{program}/members/{member}/adjustments",
            &journal_links,
            "external_id",
        ),
    ];
    for (path, targets, parameter) in created {
        for (name, target, target_method) in targets {
            let Some(operation_id) = operation(&mut doc, target, target_method.clone())
                .and_then(|o| o.operation_id.clone())
            else {
                continue;
            };
            let Some(utoipa::openapi::RefOr::T(response)) =
                operation(&mut doc, path, HttpMethod::Post)
                    .and_then(|o| o.responses.responses.get_mut("201"))
            else {
                continue;
            };
            let link = utoipa::openapi::link::Link::builder()
                .operation_id(operation_id)
                .parameter("program", "$request.path.program")
                .parameter(parameter, format!("$response.body#/{parameter}"))
                .build();
            response
                .links
                .insert((*name).to_owned(), utoipa::openapi::RefOr::T(link));
        }
    }
    doc
}

/// A link's name, and the path and method of the operation it leads to.
type Target = (&'static str, String, HttpMethod);

/// The operation at `path` and `method` of `doc`.
fn operation<'a>(
    doc: &'a mut utoipa::openapi::OpenApi,
    path: &str,
    method: HttpMethod,
) -> Option<&'a mut utoipa::openapi::path::Operation> {
    let item = doc.paths.paths.get_mut(path)?;
    match method {
        HttpMethod::Get => item.get.as_mut(),
        HttpMethod::Post => item.post.as_mut(),
        HttpMethod::Put => item.put.as_mut(),
        HttpMethod::Delete => item.delete.as_mut(),
        _ => None,
    }
}
