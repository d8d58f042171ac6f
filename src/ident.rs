//! Source table identities: a table is its schema and its name, both as the source spells
//! them, never one dotted string.
//!
//! Names are hostile input: PostgreSQL allows any character in a quoted identifier (`.`,
//! `..`, `a.b`, `a/b`, a space), MySQL most of them. So a table is a [`TableId`], a pair,
//! everywhere in the engine. Where it must be one string (the task state's map keys, the
//! command line, messages), it is written in its *display form*, SQL's: `schema.table`, with
//! a part in double quotes (`""` for a quote inside) when it is empty, contains `.` or `"`,
//! or starts or ends with white space. A task's selection rules are written the same way,
//! each part a pattern ([`parse_rule`]). Invariants:
//! - the display form is unique and reversible: [`TableId::parse`] of
//!   [`TableId`]'s `Display` gives the same pair back, for every pair of strings;
//! - ordinary names (`public.orders`) read as they always did, so task states written
//!   before this form existed keep working ([`TableId::parse_stored`] also reads their
//!   ambiguous dotted keys the way they were written).
//!
//! How a name becomes a folder of the lake is [`crate::lake::layout`]'s business.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A name that is not a `schema.table`, with how to write one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{text}' is not a table name: {reason}. Write schema.table, and put a part that holds '.' or '\"' in double quotes, e.g. \"my.schema\".orders"
)]
pub struct IdentError {
    pub text: String,
    pub reason: &'static str,
}

/// A table of a source: its schema (MySQL: its database) and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId {
    pub schema: String,
    pub table: String,
}

impl TableId {
    pub fn new(schema: impl Into<String>, table: impl Into<String>) -> Self {
        TableId {
            schema: schema.into(),
            table: table.into(),
        }
    }

    /// Reads the display form: exactly two parts, each plain or double-quoted.
    pub fn parse(text: &str) -> Result<TableId, IdentError> {
        let parts = split_parts(text)?;
        match <[String; 2]>::try_from(parts) {
            Ok([schema, table]) => Ok(TableId { schema, table }),
            Err(_) => Err(IdentError {
                text: text.to_owned(),
                reason: "it needs exactly one '.' between the schema and the table",
            }),
        }
    }

    /// Reads a key of a stored task state: the display form, or a key written before it
    /// existed, which joined the parts with the first '.' (read back that way).
    pub fn parse_stored(text: &str) -> Result<TableId, IdentError> {
        TableId::parse(text).or_else(|e| match text.split_once('.') {
            Some((schema, table)) if !text.contains('"') => Ok(TableId::new(schema, table)),
            _ => Err(e),
        })
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_part(f, &self.schema)?;
        f.write_str(".")?;
        write_part(f, &self.table)
    }
}

/// `a.b, "c.d".e`: tables for people.
pub fn list(tables: &[TableId]) -> String {
    tables
        .iter()
        .map(TableId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Names joined by `.` for people and SQL (`shop.public.orders`), each part that needs it
/// in double quotes as in [`TableId`]'s display form (`shop."a.b".orders`).
pub fn display_name(parts: &[&str]) -> String {
    struct Part<'a>(&'a str);
    impl fmt::Display for Part<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write_part(f, self.0)
        }
    }
    parts
        .iter()
        .map(|p| Part(p).to_string())
        .collect::<Vec<_>>()
        .join(".")
}

impl Serialize for TableId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TableId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        TableId::parse_stored(&text).map_err(serde::de::Error::custom)
    }
}

/// Whether a part must be quoted to read back as itself.
fn needs_quotes(part: &str) -> bool {
    part.is_empty()
        || part.contains(['.', '"'])
        || part.starts_with(char::is_whitespace)
        || part.ends_with(char::is_whitespace)
}

fn write_part(f: &mut fmt::Formatter<'_>, part: &str) -> fmt::Result {
    if needs_quotes(part) {
        write!(f, "\"{}\"", part.replace('"', "\"\""))
    } else {
        f.write_str(part)
    }
}

/// A rule's schema and table patterns; the error says how to write one.
pub fn parse_rule(rule: &str) -> Result<(String, String), String> {
    let refusal = || {
        format!(
            "selection rule '{rule}' must be schema.table, with % as wildcard (e.g. \"public.%\"); a part holding '.' goes in double quotes (\"my.schema\".%)"
        )
    };
    let parts = split_parts(rule).map_err(|_| refusal())?;
    match <[String; 2]>::try_from(parts) {
        Ok([schema, table]) if !schema.is_empty() && !table.is_empty() => Ok((schema, table)),
        _ => Err(refusal()),
    }
}

/// Splits a dotted name (any number of parts, as [`display_name`] writes them) into its
/// parts, undoing double quotes.
pub fn split_parts(text: &str) -> Result<Vec<String>, IdentError> {
    let error = |reason| IdentError {
        text: text.to_owned(),
        reason,
    };
    let mut parts = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(error("a double quote is not closed")),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                }
            }
            match chars.peek() {
                None | Some('.') => {}
                Some(_) => return Err(error("a quoted part must be followed by '.' or the end")),
            }
        } else {
            while let Some(&c) = chars.peek() {
                match c {
                    '.' => break,
                    '"' => return Err(error("a '\"' inside a part must be quoted")),
                    c => {
                        part.push(c);
                        chars.next();
                    }
                }
            }
            if part.is_empty() {
                return Err(error("a part is empty (write \"\" for an empty name)"));
            }
        }
        parts.push(part);
        if chars.next().is_none() {
            return Ok(parts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &[&str] = &[
        ".",
        "..",
        "a.b",
        "a/b",
        "a\\b",
        " ",
        "_x",
        ".x",
        "",
        "\"",
        "a\"b.\"c",
        "Orders",
        "orders",
        "ÄÖÜäöüßÉÈÊëïîôûçñ€😀日本語テーブル名前",
        "public",
        " lead",
        "trail ",
        "%2E",
    ];

    #[test]
    fn the_display_form_reads_back_for_every_pair() {
        for schema in HOSTILE {
            for table in HOSTILE {
                let id = TableId::new(*schema, *table);
                let text = id.to_string();
                assert_eq!(TableId::parse(&text), Ok(id.clone()), "{text}");
                assert_eq!(TableId::parse_stored(&text), Ok(id.clone()), "{text}");
                let json = serde_json::to_string(&id).unwrap();
                assert_eq!(serde_json::from_str::<TableId>(&json).unwrap(), id);
            }
        }
    }

    #[test]
    fn names_of_any_length_read_back() {
        for parts in [
            vec!["shop", "a.b", ".."],
            vec!["lake", "analytics", "t"],
            vec!["x"],
        ] {
            let text = display_name(&parts);
            assert_eq!(split_parts(&text).unwrap(), parts, "{text}");
        }
        assert_eq!(display_name(&["shop", "a.b", "t"]), "shop.\"a.b\".t");
    }

    #[test]
    fn ordinary_names_are_plain_and_others_quoted() {
        assert_eq!(
            TableId::new("public", "orders").to_string(),
            "public.orders"
        );
        assert_eq!(TableId::new("a b", "x$1").to_string(), "a b.x$1");
        assert_eq!(TableId::new("a.b", "c").to_string(), "\"a.b\".c");
        assert_eq!(TableId::new(".", ".").to_string(), "\".\".\".\"");
        assert_eq!(TableId::new("", "x\"y").to_string(), "\"\".\"x\"\"y\"");
        // Two different tables never share a text: the old dotted key did.
        assert_ne!(
            TableId::new("a.b", "c").to_string(),
            TableId::new("a", "b.c").to_string()
        );
    }

    #[test]
    fn malformed_names_are_refused_with_the_fix() {
        for bad in ["orders", "a.b.c", "\"a", "\"a\"b.c", "a\"b.c", ".x", "x."] {
            let e = TableId::parse(bad).unwrap_err();
            assert!(e.to_string().contains("double quotes"), "{e}");
        }
        assert!(parse_rule("a.b.c").is_err());
        assert!(parse_rule("orders").is_err());
        assert!(parse_rule("a.").is_err());
        assert_eq!(parse_rule("\"a.b\".%"), Ok(("a.b".into(), "%".into())));
        // A stored key from before the display form: split at its first dot, as written.
        assert_eq!(TableId::parse_stored("a.b.c"), Ok(TableId::new("a", "b.c")));
    }
}
