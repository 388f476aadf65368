//! Reading a config: `include` expansion (telemt semantics), TOML parsing with unknown-key
//! warnings, and hand-off to `validate` for range checks and normalisation.
//!
//! `include` semantics (same as telemt): any line whose trimmed text is `include = "path"` is
//! replaced, before TOML parsing, by the text of that file (path relative to the including
//! file's directory), recursively up to depth 10. The inclusion is purely textual, so an
//! `include` inside a table contributes keys to that table.

use std::path::{Path, PathBuf};

use crate::model::Config;
use crate::validate;

/// Why a config could not be loaded. The message names the key or file at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{0}")]
    Include(String),
    #[error("TOML error: {0}")]
    Parse(String),
    #[error("{0}")]
    Invalid(String),
}

/// A validated config plus the warnings produced while loading it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

const MAX_INCLUDE_DEPTH: u8 = 10;

/// If `line` is an `include = "..."` directive, returns the (unquoted) path.
pub(crate) fn include_target(line: &str) -> Option<&str> {
    let rest = line.trim().strip_prefix("include")?.trim_start();
    let rest = rest.strip_prefix('=')?;
    Some(rest.trim().trim_matches('"'))
}

/// Expands `include` lines of `content` (which lives in `base_dir`). `files` receives every
/// included path in order.
pub(crate) fn expand_includes(
    content: &str,
    base_dir: &Path,
    files: &mut Vec<PathBuf>,
) -> Result<String, ConfigError> {
    expand_at(content, base_dir, 0, files)
}

fn expand_at(
    content: &str,
    base_dir: &Path,
    depth: u8,
    files: &mut Vec<PathBuf>,
) -> Result<String, ConfigError> {
    if depth > MAX_INCLUDE_DEPTH {
        return Err(ConfigError::Include(format!(
            "include: nesting deeper than {MAX_INCLUDE_DEPTH} levels (include cycle?)"
        )));
    }
    let mut out = String::with_capacity(content.len());
    for line in content.lines() {
        if let Some(target) = include_target(line) {
            let resolved = base_dir.join(target);
            let text = std::fs::read_to_string(&resolved).map_err(|e| {
                ConfigError::Include(format!(
                    "include = {target:?}: cannot read {}: {e}",
                    resolved.display()
                ))
            })?;
            files.push(resolved.clone());
            let dir = resolved.parent().unwrap_or(base_dir);
            out.push_str(&expand_at(&text, dir, depth + 1, files)?);
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

/// Parses and validates already-expanded TOML text.
pub fn parse_str(text: &str) -> Result<Loaded, ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string().trim_end().to_string()))?;
    validate::user_secrets(&table)?;
    let mut warnings = Vec::new();
    validate::lenient_warnings(&table, &mut warnings);
    let facts = validate::RawFacts::from_table(&table);
    let mut unknown = Vec::new();
    let mut config: Config = serde_ignored::deserialize(toml::Value::Table(table), |path| {
        unknown.push(path.to_string())
    })
    .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().trim().to_string()))?;
    for key in unknown {
        warnings.push(format!("unknown key `{key}` ignored"));
    }
    validate::finish(&mut config, &facts, &mut warnings)?;
    Ok(Loaded { config, warnings })
}

/// Reads the main file's bytes, expands includes and loads. Returns the main file's bytes too
/// (the revision is their hash).
pub fn load_path(path: &Path) -> Result<(Vec<u8>, Loaded), ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let loaded = load_bytes(path, &bytes)?;
    Ok((bytes, loaded))
}

/// Loads a config from the main file's bytes (includes are read from disk relative to `path`).
pub fn load_bytes(path: &Path, bytes: &[u8]) -> Result<Loaded, ConfigError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ConfigError::Parse(format!("{} is not valid UTF-8", path.display())))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut files = Vec::new();
    let merged = expand_includes(text, base, &mut files)?;
    let mut loaded = parse_str(&merged)?;
    loaded.config.includes = files;
    Ok(loaded)
}

/// Convenience for `mtproxyd check`: load a file and return the config and its warnings.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigError> {
    load_path(path).map(|(_, l)| l)
}
