//! Fast path for API edits: the main file's text is edited in place at byte offsets found once
//! by a span-preserving TOML parse and then kept up to date across our own edits. This avoids
//! re-serialising a whole `toml_edit` document (milliseconds for 10,000 users) on every write.
//!
//! Only plain layouts qualify: each per-user `access.*` table that exists is a `[header]`
//! table whose entries are `key = value` lines of their own. Anything else (inline tables,
//! dotted keys, several entries on one line, `include` lines) makes `AccessIndex::build` return
//! `None` and the store falls back to the `toml_edit` document path.

use std::collections::HashMap;
use std::ops::Range;

use toml_edit::{ImDocument, Item};

use crate::edit::{EditError, UserEdit, USER_TABLES};

#[derive(Debug, Clone)]
struct Entry {
    /// Whole line(s) of the entry, from line start through the newline.
    line: Range<usize>,
    /// The value's own text (without surrounding whitespace or comment).
    value: Range<usize>,
}

#[derive(Debug, Clone)]
struct TableIdx {
    /// The `[access.<table>]` header line, through its newline.
    header: Range<usize>,
    entries: HashMap<String, Entry>,
    /// Where a new entry goes: the end of the last entry's line, or after the header line.
    insert_at: usize,
}

/// Byte positions of the per-user tables in the main file's text.
#[derive(Debug, Clone)]
pub(crate) struct AccessIndex {
    tables: [Option<TableIdx>; USER_TABLES.len()],
}

fn line_start(text: &str, at: usize) -> usize {
    text[..at].rfind('\n').map_or(0, |i| i + 1)
}

fn line_end(text: &str, at: usize) -> usize {
    text[at..].find('\n').map_or(text.len(), |i| at + i + 1)
}

/// Renders a username as a TOML key (bare when possible).
fn key_repr(user: &str) -> String {
    if !user.is_empty()
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        user.to_string()
    } else {
        toml_edit::Key::new(user).display_repr().into_owned()
    }
}

impl AccessIndex {
    /// Indexes `text`, or `None` when its layout needs the document path.
    pub(crate) fn build(text: &str) -> Option<AccessIndex> {
        if crate::fsio::has_includes(text) {
            return None;
        }
        let doc = ImDocument::parse(text).ok()?;
        let access = match doc.get("access")? {
            Item::Table(t) if !t.is_dotted() => t,
            _ => return None,
        };
        let mut tables: [Option<TableIdx>; USER_TABLES.len()] = Default::default();
        for (slot, name) in tables.iter_mut().zip(USER_TABLES) {
            let Some(item) = access.get(name) else {
                continue;
            };
            let Item::Table(t) = item else { return None };
            if t.is_dotted() || t.is_implicit() {
                return None;
            }
            let span = t.span()?;
            let mut insert_at = line_end(text, span.start);
            let mut entries = HashMap::with_capacity(t.len());
            for (k, v) in t.iter() {
                let Item::Value(v) = v else { return None };
                let kspan = t.key(k)?.span()?;
                let vspan = v.span()?;
                let start = line_start(text, kspan.start);
                let end = line_end(text, vspan.end);
                let before = &text[start..kspan.start];
                let after = text[vspan.end..end].trim_start();
                if !before.trim().is_empty() || !(after.is_empty() || after.starts_with('#')) {
                    return None;
                }
                insert_at = insert_at.max(end);
                entries.insert(
                    k.to_string(),
                    Entry {
                        line: start..end,
                        value: vspan,
                    },
                );
            }
            let header = line_start(text, span.start)..line_end(text, span.start);
            *slot = Some(TableIdx {
                header,
                entries,
                insert_at,
            });
        }
        tables[0].as_ref()?;
        Some(AccessIndex { tables })
    }

    /// Shifts recorded positions after `from` (and at `from` when `inclusive`) by `delta`.
    fn shift(&mut self, from: usize, inclusive: bool, delta: isize) {
        let mv = |p: &mut usize| {
            if *p > from || (inclusive && *p == from) {
                *p = p.saturating_add_signed(delta);
            }
        };
        for t in self.tables.iter_mut().flatten() {
            mv(&mut t.insert_at);
            mv(&mut t.header.start);
            mv(&mut t.header.end);
            for e in t.entries.values_mut() {
                mv(&mut e.line.start);
                mv(&mut e.line.end);
                mv(&mut e.value.start);
                mv(&mut e.value.end);
            }
        }
    }

    /// Replaces `range` of `text` with `with`, keeping the index in step.
    fn splice(&mut self, text: &mut String, range: Range<usize>, with: &str) {
        let delta = with.len() as isize - (range.end - range.start) as isize;
        let from = range.end;
        text.replace_range(range, with);
        self.shift(from, true, delta);
    }

    fn set(&mut self, text: &mut String, ti: usize, user: &str, value: &str) {
        if let Some(e) = self.tables[ti]
            .as_ref()
            .and_then(|t| t.entries.get(user))
            .cloned()
        {
            self.splice(text, e.value.clone(), value);
            if let Some(e) = self.tables[ti]
                .as_mut()
                .and_then(|t| t.entries.get_mut(user))
            {
                e.value.end = e.value.start + value.len();
            }
            return;
        }
        let (at, new_table) = match &self.tables[ti] {
            Some(t) => (t.insert_at, false),
            // A new table goes after the last existing per-user table.
            None => (
                self.tables
                    .iter()
                    .flatten()
                    .map(|t| t.insert_at)
                    .max()
                    .unwrap_or(text.len()),
                true,
            ),
        };
        let mut block = String::new();
        if at > 0 && !text[..at].ends_with('\n') {
            block.push('\n');
        }
        let mut header = 0..0;
        if new_table {
            block.push('\n');
            let h = format!("[access.{}]\n", USER_TABLES[ti]);
            header = at + block.len()..at + block.len() + h.len();
            block.push_str(&h);
        }
        let line_start = at + block.len();
        let key = key_repr(user);
        block.push_str(&format!("{key} = {value}\n"));
        let value_start = line_start + key.len() + 3;
        let end = at + block.len();
        // Insertion at `at`: a line ending exactly at `at` stays put, later ones move.
        self.shift(at, false, block.len() as isize);
        text.insert_str(at, &block);
        let t = self.tables[ti].get_or_insert_with(|| TableIdx {
            header,
            entries: HashMap::new(),
            insert_at: end,
        });
        t.insert_at = end;
        t.entries.insert(
            user.to_string(),
            Entry {
                line: line_start..end,
                value: value_start..value_start + value.len(),
            },
        );
    }

    fn remove(&mut self, text: &mut String, ti: usize, user: &str) {
        let Some(e) = self.tables[ti]
            .as_mut()
            .and_then(|t| t.entries.remove(user))
        else {
            return;
        };
        let removed_end = e.line.end;
        // If this was the last entry, the insertion point moves back to where its line started.
        if let Some(t) = self.tables[ti].as_mut() {
            if t.insert_at == removed_end {
                t.insert_at = e.line.start;
            }
        }
        self.splice(text, e.line, "");
        // A table this edit emptied goes too (with the blank line we put before headers);
        // one the operator wrote empty was never indexed with entries, so it stays.
        if let Some(t) = self.tables[ti].take_if(|t| t.entries.is_empty()) {
            let mut start = t.header.start;
            if text[..start].ends_with("\n\n") {
                start -= 1;
            }
            self.splice(text, start..t.header.end, "");
        }
    }

    /// Applies `edit` to `text` (the caller checked existence and the last-user rule).
    pub(crate) fn apply(
        &mut self,
        text: &mut String,
        edit: &UserEdit,
        cur_rate: Option<crate::model::RateLimitBps>,
    ) -> Result<(), EditError> {
        let user = edit.username();
        for w in crate::edit::writes_for(edit, cur_rate)? {
            let ti = USER_TABLES.iter().position(|t| *t == w.table).unwrap_or(0);
            match &w.value {
                Some(v) => {
                    let repr = v.to_string();
                    self.set(text, ti, user, repr.trim());
                }
                None => self.remove(text, ti, user),
            }
        }
        Ok(())
    }
}
