//! Writing observed text into a YAML document by hand (serde_yaml cannot
//! write comments): every string is one double-quoted scalar and every
//! comment one line, whatever an attacker named a file.
//!
//! A JSON string is a YAML double-quoted scalar, so quoting starts from
//! serde_json's. JSON leaves some characters raw that YAML does not: NEL,
//! LINE SEPARATOR and PARAGRAPH SEPARATOR are line breaks to libyaml (a
//! break inside quotes is folded into a space: another path), and DEL, the
//! C1 controls and a few others are refused outright, which would make the
//! whole draft unreadable. Those are escaped as `\uXXXX`, which YAML reads
//! back as the same character.

use std::fmt::Write;

/// Whether `c` must be escaped in a double-quoted scalar or a comment:
/// outside YAML's printable set, a line break, or a byte-order mark.
pub(crate) fn needs_escape(c: char) -> bool {
    let printable = matches!(c,
        ' '..='~' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..);
    !printable || c == '\u{feff}' || c == '\u{2028}' || c == '\u{2029}'
}

/// `text` as a double-quoted YAML scalar that reads back as exactly
/// `text`.
pub(crate) fn quote(text: &str) -> String {
    // `Value`'s Display is serde_json's quoting, and cannot fail.
    let json = serde_json::Value::String(text.to_string()).to_string();
    if !json.chars().any(needs_escape) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if needs_escape(c) {
            // Every character that needs it is in the Basic Multilingual
            // Plane (the printable set includes everything above it).
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` safe on one comment line: as it is when it can be, else with
/// breaks and unprintable characters escaped (a newline in a path must not
/// end the comment and start a line of policy).
pub(crate) fn comment_text(text: &str) -> String {
    if !text.chars().any(needs_escape) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if needs_escape(c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Implicit (`key: value`) keys are limited to 1024 characters by YAML;
/// longer ones are written as explicit keys.
const MAX_IMPLICIT_KEY: usize = 1000;

/// A YAML document built line by line at two spaces per level.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    out: String,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    fn indent(&mut self, level: usize) {
        for _ in 0..level {
            self.out.push_str("  ");
        }
    }

    /// A comment line; `text` is made safe here, so callers may pass
    /// anything observed.
    pub fn comment(&mut self, level: usize, text: &str) {
        self.indent(level);
        self.out.push_str("# ");
        self.out.push_str(&comment_text(text));
        self.out.push('\n');
    }

    /// `key:` opening a block below it. Keys are the document's own field
    /// names, never observed text.
    pub fn open(&mut self, level: usize, key: &str) {
        self.indent(level);
        self.out.push_str(key);
        self.out.push_str(":\n");
    }

    /// `key: value` with a value already written as YAML (a number, a
    /// boolean, or a [`quote`]d string).
    pub fn field(&mut self, level: usize, key: &str, value: &str) {
        self.indent(level);
        let _ = writeln!(self.out, "{key}: {value}");
    }

    /// `"key": "value"` for observed text on both sides (labels).
    pub fn pair(&mut self, level: usize, key: &str, value: &str) {
        let key = quote(key);
        self.indent(level);
        if key.chars().count() > MAX_IMPLICIT_KEY {
            self.out.push_str("? ");
            self.out.push_str(&key);
            self.out.push('\n');
            self.indent(level);
            self.out.push_str(": ");
        } else {
            self.out.push_str(&key);
            self.out.push_str(": ");
        }
        self.out.push_str(&quote(value));
        self.out.push('\n');
    }

    /// `- value` with a value already written as YAML.
    pub fn item(&mut self, level: usize, value: &str) {
        self.indent(level);
        let _ = writeln!(self.out, "- {value}");
    }

    /// `- key: value` opening a mapping item; its other fields follow at
    /// `level + 1`.
    pub fn item_field(&mut self, level: usize, key: &str, value: &str) {
        self.indent(level);
        let _ = writeln!(self.out, "- {key}: {value}");
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const HOSTILE: &[&str] = &[
        "/app/server",
        "/tmp/a\"b'c",
        "/tmp/x\nspec: {mode: learn}",
        "/tmp/x: y # z",
        "/tmp/\\path\t\r",
        "/tmp/nel\u{85}ls\u{2028}ps\u{2029}",
        "/tmp/del\u{7f}c1\u{9b}bom\u{feff}nc\u{fffe}",
        "/tmp/\u{0}\u{1b}[2J",
        "- item",
        "&anchor *alias !tag %dir @at `tick",
        "/tmp/emoji-\u{1f600}",
        "",
    ];

    #[test]
    fn any_text_quotes_to_one_scalar_that_reads_back_as_itself() {
        for text in HOSTILE {
            let quoted = quote(text);
            assert!(!quoted.contains('\n'), "{quoted}");
            let doc = format!("value: {quoted}\nafter: 1\n");
            let read: BTreeMap<String, serde_yaml::Value> =
                serde_yaml::from_str(&doc).unwrap_or_else(|e| panic!("{text:?}: {e}\n{doc}"));
            assert_eq!(read["value"].as_str(), Some(*text), "{doc}");
            assert_eq!(read.len(), 2, "{doc}");
        }
    }

    #[test]
    fn quoting_is_jsons_where_json_is_valid_yaml() {
        assert_eq!(quote("/tmp/a\"b\nc"), r#""/tmp/a\"b\nc""#);
        assert_eq!(quote("a\u{2028}b"), r#""a\u2028b""#);
    }

    #[test]
    fn comments_stay_on_their_line() {
        let mut doc = Writer::new();
        for text in HOSTILE {
            doc.comment(1, &format!("seen at {text}"));
        }
        doc.open(0, "key");
        doc.item(1, "1");
        let text = doc.finish();
        assert_eq!(text.lines().count(), HOSTILE.len() + 2, "{text}");
        let read: BTreeMap<String, Vec<u8>> = serde_yaml::from_str(&text).unwrap();
        assert_eq!(read["key"], [1]);
    }

    #[test]
    fn a_key_too_long_for_an_implicit_key_is_written_explicitly() {
        let key = "k".repeat(2000);
        let mut doc = Writer::new();
        doc.open(0, "labels");
        doc.pair(1, &key, "v: w");
        doc.pair(1, "app", "web");
        let read: BTreeMap<String, BTreeMap<String, String>> =
            serde_yaml::from_str(&doc.finish()).unwrap();
        assert_eq!(read["labels"][&key], "v: w");
        assert_eq!(read["labels"]["app"], "web");
    }
}
