//! Whole-section edits (`GET`/`PATCH /v1/config`): which top-level sections an operator may
//! edit over HTTP, reading them as JSON, and deep-merging a sparse JSON patch into the
//! `toml_edit` document so comments and layout outside the touched keys survive.
//!
//! Must not: touch `access` (users go through [`crate::UserEdit`]), `server` (the API's own
//! listener and auth) or `network` (per-node addresses); validate (the store re-loads the
//! merged text as a whole before writing).
//!
//! ```text
//!  {"censorship": {"tls_domain": "x"}, "upstreams": [{...}]}
//!        │ object → merged key by key into [censorship]; null removes a key
//!        │ array / scalar → replaces the value ([[upstreams]] replaced as a whole)
//! ```

use serde_json::{Map, Value as Json};
use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, Value};

use crate::edit::EditError;

/// Sections `PATCH /v1/config` may change (telemt 3.4's list).
pub const EDITABLE_SECTIONS: [&str; 6] = [
    "general",
    "timeouts",
    "censorship",
    "upstreams",
    "show_link",
    "dc_overrides",
];

/// Upstream keys that carry credentials: never shown by `GET /v1/config`.
const SECRET_UPSTREAM_KEYS: [&str; 2] = ["password", "url"];

/// Checks the patch's top-level keys before anything is touched.
pub fn check_patch(patch: &Map<String, Json>) -> Result<(), EditError> {
    if patch.contains_key("access") {
        return Err(EditError::AccessNotEditable);
    }
    if let Some(k) = patch
        .keys()
        .find(|k| !EDITABLE_SECTIONS.contains(&k.as_str()))
    {
        return Err(EditError::SectionNotEditable(k.clone()));
    }
    if patch.is_empty() {
        return Err(EditError::Invalid(format!(
            "the patch names no editable section ({})",
            EDITABLE_SECTIONS.join(", ")
        )));
    }
    Ok(())
}

/// Merges `patch` into `doc`; returns the sections whose text changed, sorted by name.
pub(crate) fn merge(
    doc: &mut DocumentMut,
    patch: &Map<String, Json>,
) -> Result<Vec<String>, EditError> {
    check_patch(patch)?;
    let mut changed = Vec::new();
    for (section, value) in patch {
        let before = doc.get(section).map(|i| i.to_string());
        let root = doc.as_table_mut();
        merge_key(root, section, value, section)?;
        let after = doc.get(section).map(|i| i.to_string());
        if before != after {
            changed.push(section.clone());
        }
    }
    Ok(changed)
}

fn merge_key(table: &mut Table, key: &str, value: &Json, path: &str) -> Result<(), EditError> {
    match value {
        Json::Null => {
            table.remove(key);
        }
        Json::Object(fields) => {
            if !matches!(table.get(key), Some(Item::Table(_))) {
                let mut t = Table::new();
                t.set_implicit(false);
                table.insert(key, Item::Table(t));
            }
            let Some(Item::Table(sub)) = table.get_mut(key) else {
                return Err(EditError::Invalid(format!("`{path}` is not a table")));
            };
            for (k, v) in fields {
                merge_key(sub, k, v, &format!("{path}.{k}"))?;
            }
        }
        Json::Array(items) if !items.is_empty() && items.iter().all(Json::is_object) => {
            let mut aot = ArrayOfTables::new();
            for item in items {
                let Json::Object(fields) = item else { continue };
                let mut t = Table::new();
                for (k, v) in fields {
                    merge_key(&mut t, k, v, &format!("{path}[].{k}"))?;
                }
                aot.push(t);
            }
            table.insert(key, Item::ArrayOfTables(aot));
        }
        other => {
            let v = to_value(other, path)?;
            match table.get_mut(key) {
                // Keep the old value's surrounding whitespace and trailing comment.
                Some(Item::Value(old)) => {
                    let decor = old.decor().clone();
                    *old = v;
                    *old.decor_mut() = decor;
                }
                _ => {
                    table.insert(key, Item::Value(v));
                }
            }
        }
    }
    Ok(())
}

fn to_value(j: &Json, path: &str) -> Result<Value, EditError> {
    Ok(match j {
        Json::Bool(b) => Value::from(*b),
        Json::String(s) => Value::from(s.as_str()),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(f)) if n.is_f64() => Value::from(f),
            _ => {
                return Err(EditError::Invalid(format!(
                    "`{path}`: {n} does not fit a TOML integer"
                )))
            }
        },
        Json::Array(items) => {
            let mut a = Array::new();
            for item in items {
                a.push(to_value(item, path)?);
            }
            Value::Array(a)
        }
        Json::Object(fields) => {
            let mut t = InlineTable::new();
            for (k, v) in fields {
                t.insert(k, to_value(v, &format!("{path}.{k}"))?);
            }
            Value::InlineTable(t)
        }
        Json::Null => {
            return Err(EditError::Invalid(format!(
                "`{path}`: null is only allowed for a key to remove"
            )))
        }
    })
}

/// The editable sections present in `text` (an expanded config), as JSON. Upstream
/// credentials are left out.
pub fn editable_sections(text: &str) -> Result<Map<String, Json>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let mut out = Map::new();
    for name in EDITABLE_SECTIONS {
        let Some(v) = table.get(name) else { continue };
        let mut j = serde_json::to_value(v).map_err(|e| e.to_string())?;
        if name == "upstreams" {
            if let Json::Array(items) = &mut j {
                for item in items.iter_mut().filter_map(Json::as_object_mut) {
                    for k in SECRET_UPSTREAM_KEYS {
                        item.remove(k);
                    }
                }
            }
        }
        out.insert(name.to_owned(), j);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> DocumentMut {
        text.parse().expect("toml")
    }

    fn obj(j: Json) -> Map<String, Json> {
        match j {
            Json::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn deep_merge_keeps_comments_and_other_keys() {
        let mut d = doc("# top\n[censorship]\ntls_domain = \"a.example\"  # front\nmask = true\n\n[general]\nlog_level = \"normal\"\n");
        let patch = obj(serde_json::json!({"censorship": {"tls_domain": "b.example"}}));
        let changed = merge(&mut d, &patch).expect("merge");
        assert_eq!(changed, ["censorship"]);
        assert_eq!(
            d.to_string(),
            "# top\n[censorship]\ntls_domain = \"b.example\"  # front\nmask = true\n\n[general]\nlog_level = \"normal\"\n"
        );
    }

    #[test]
    fn arrays_replace_null_removes_and_new_sections_appear() {
        let mut d = doc("[general]\nlog_level = \"normal\"\nfast_mode = true\n");
        let patch = obj(serde_json::json!({
            "general": {"fast_mode": null, "links": {"public_host": "p.example"}},
            "upstreams": [{"type": "socks5", "address": "127.0.0.1:1080"}],
            "dc_overrides": {"2": ["127.0.0.1:443"]}
        }));
        let changed = merge(&mut d, &patch).expect("merge");
        assert_eq!(changed, ["dc_overrides", "general", "upstreams"]);
        let text = d.to_string();
        assert!(!text.contains("fast_mode"), "{text}");
        assert!(
            text.contains("[general.links]\npublic_host = \"p.example\""),
            "{text}"
        );
        assert!(text.contains("[[upstreams]]\n"), "{text}");
        assert!(text.contains("type = \"socks5\""), "{text}");
        assert!(text.contains("2 = [\"127.0.0.1:443\"]"), "{text}");
        // What was written loads as the keys the patch meant.
        let back: toml::Table = text.parse().expect("valid toml");
        assert_eq!(back["dc_overrides"]["2"][0].as_str(), Some("127.0.0.1:443"));
        // The same patch again changes nothing.
        assert!(merge(&mut d, &patch).expect("merge").is_empty());
    }

    #[test]
    fn forbidden_sections_are_named() {
        let mut d = doc("");
        for (patch, want) in [
            (serde_json::json!({"access": {}}), "access"),
            (serde_json::json!({"server": {"port": 1}}), "server"),
            (serde_json::json!({"network": {}}), "network"),
            (serde_json::json!({"mystery": 1}), "mystery"),
        ] {
            let err = merge(&mut d, &obj(patch)).expect_err(want);
            assert!(err.to_string().contains(want), "{err}");
        }
        assert!(matches!(
            merge(&mut d, &Map::new()),
            Err(EditError::Invalid(_))
        ));
    }

    #[test]
    fn reading_leaves_out_access_server_and_credentials() {
        let text = "[general]\nlog_level = \"debug\"\n[server]\nport = 1\n[access.users]\na = \"00112233445566778899aabbccddeeff\"\n[[upstreams]]\ntype = \"socks5\"\naddress = \"h:1\"\nusername = \"u\"\npassword = \"p\"\n";
        let m = editable_sections(text).expect("sections");
        assert_eq!(m.keys().collect::<Vec<_>>(), ["general", "upstreams"]);
        assert_eq!(m["upstreams"][0]["username"], "u");
        assert!(m["upstreams"][0].get("password").is_none());
    }
}
