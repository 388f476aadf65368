//! A small JSON-Schema checker for tests: walks a rendered response against a schema of the
//! served document and reports every mismatch (unknown or missing property, wrong type, value
//! outside an `enum`, negative unsigned). Only the keywords the document uses are understood.
//! Shared with the integration tests by path, so it depends on `serde_json` alone.

use serde_json::Value;

/// Mismatches of `value` against `schema`, resolving `$ref`s in `doc`; empty when it conforms.
pub fn check(doc: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    walk(doc, schema, value, "$", &mut errors);
    errors
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    let mut s = schema;
    while let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        match doc["components"]["schemas"].get(name) {
            Some(target) => s = target,
            None => return &Value::Null,
        }
    }
    s
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        _ => false,
    }
}

fn walk(doc: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let s = resolve(doc, schema);
    if s.is_null() {
        errors.push(format!("{at}: unresolved schema {schema}"));
        return;
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for sub in all {
            walk(doc, sub, v, at, errors);
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alts) = s.get(key).and_then(Value::as_array) {
            let matching = alts
                .iter()
                .filter(|alt| check_at(doc, alt, v, at).is_empty())
                .count();
            let ok = if key == "oneOf" {
                matching == 1
            } else {
                matching >= 1
            };
            if !ok {
                let why: Vec<String> = alts.iter().flat_map(|a| check_at(doc, a, v, at)).collect();
                errors.push(format!(
                    "{at}: {matching} of the {key} alternatives match: {why:?}"
                ));
            }
        }
    }
    match s.get("type") {
        Some(Value::String(t)) if !type_matches(t, v) => {
            errors.push(format!("{at}: expected {t}, got {v}"));
            return;
        }
        Some(Value::Array(ts))
            if !ts
                .iter()
                .filter_map(Value::as_str)
                .any(|t| type_matches(t, v)) =>
        {
            errors.push(format!("{at}: expected one of {ts:?}, got {v}"));
            return;
        }
        _ => {}
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        if !values.contains(v) {
            errors.push(format!("{at}: {v} is not one of {values:?}"));
        }
    }
    if let (Some(min), Some(n)) = (s.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if n < min {
            errors.push(format!("{at}: {n} is below the minimum {min}"));
        }
    }
    if let (Some(props), Some(obj)) = (
        s.get("properties").and_then(Value::as_object),
        v.as_object(),
    ) {
        let open = matches!(
            s.get("additionalProperties"),
            Some(Value::Bool(true)) | Some(Value::Object(_))
        );
        for (k, item) in obj {
            match props.get(k) {
                Some(p) => walk(doc, p, item, &format!("{at}.{k}"), errors),
                None if open => {}
                None => errors.push(format!("{at}: property `{k}` is not in the schema")),
            }
        }
    }
    if let (Some(req), Some(obj)) = (s.get("required").and_then(Value::as_array), v.as_object()) {
        for k in req.iter().filter_map(Value::as_str) {
            if !obj.contains_key(k) {
                errors.push(format!("{at}: required property `{k}` is missing"));
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            walk(doc, items, item, &format!("{at}[{i}]"), errors);
        }
    }
}

fn check_at(doc: &Value, schema: &Value, v: &Value, at: &str) -> Vec<String> {
    let mut errors = Vec::new();
    walk(doc, schema, v, at, &mut errors);
    errors
}
