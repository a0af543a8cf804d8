//! Field paths such as `spec.containers[*].securityContext.privileged`:
//! parsed once, then resolved against JSON to the concrete paths they reach
//! (`spec.containers[1].securityContext.privileged`), which denial messages name.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::{self, Write};

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
    Each,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    segments: Vec<Segment>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid field path {path:?}: {reason}")]
pub struct PathError {
    path: String,
    reason: &'static str,
}

/// A value found at a concrete path; `value` is `None` where the path ends
/// at a missing field (so `Exists`-style checks can report it).
#[derive(Debug, PartialEq)]
pub struct Resolved<'a> {
    pub path: String,
    pub value: Option<&'a Value>,
}

impl FieldPath {
    pub fn parse(text: &str) -> Result<Self, PathError> {
        let fail = |reason| PathError {
            path: text.to_string(),
            reason,
        };
        if text.is_empty() {
            return Err(fail("empty"));
        }
        let mut segments = Vec::new();
        for part in text.split('.') {
            let (key, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if key.is_empty() && rest.is_empty() {
                return Err(fail("empty segment"));
            }
            if !key.is_empty() {
                segments.push(Segment::Key(key.to_string()));
            }
            while let Some(stripped) = rest.strip_prefix('[') {
                let close = stripped.find(']').ok_or_else(|| fail("unclosed '['"))?;
                let inner = &stripped[..close];
                segments.push(if inner == "*" {
                    Segment::Each
                } else {
                    Segment::Index(
                        inner
                            .parse()
                            .map_err(|_| fail("index must be * or a number"))?,
                    )
                });
                rest = &stripped[close + 1..];
            }
            if !rest.is_empty() {
                return Err(fail("unexpected text after ']'"));
            }
        }
        Ok(Self { segments })
    }

    /// Every concrete location the path reaches. A missing field yields one
    /// entry with `value: None`; a missing list yields none (nothing to check).
    pub fn resolve<'a>(&self, root: &'a Value) -> Vec<Resolved<'a>> {
        let mut out = Vec::new();
        walk(&self.segments, Some(root), &mut String::new(), &mut out);
        out
    }
}

/// Resolves `segments` below `node`, whose path is `at` (a buffer shared
/// by the whole walk: each step appends and truncates back).
fn walk<'a>(
    segments: &[Segment],
    node: Option<&'a Value>,
    at: &mut String,
    out: &mut Vec<Resolved<'a>>,
) {
    let Some((first, rest)) = segments.split_first() else {
        out.push(Resolved {
            path: at.clone(),
            value: node.filter(|v| !v.is_null()),
        });
        return;
    };
    let len = at.len();
    match first {
        Segment::Key(key) => {
            if !at.is_empty() {
                at.push('.');
            }
            at.push_str(key);
            walk(rest, node.and_then(|n| n.get(key)), at, out);
        }
        Segment::Index(i) => {
            let _ = write!(at, "[{i}]");
            walk(rest, node.and_then(|n| n.get(i)), at, out);
        }
        Segment::Each => {
            for (i, item) in node
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let _ = write!(at, "[{i}]");
                walk(rest, Some(item), at, out);
                at.truncate(len);
            }
        }
    }
    at.truncate(len);
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.segments.iter().enumerate() {
            match s {
                Segment::Key(k) if i == 0 => write!(f, "{k}")?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
                Segment::Each => write!(f, "[*]")?,
            }
        }
        Ok(())
    }
}

/// The union of some field paths: what a set of rules can read of a
/// document. [`FieldSet::extract`] parses just that part of a JSON text,
/// skipping the rest unparsed, and the paths resolve against the result
/// exactly as against the whole document.
/// Each node is the set below one key (see [`FieldSet::child`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    /// A path ends here: keep the whole value.
    whole: bool,
    keys: BTreeMap<String, FieldSet>,
    /// Paths continue into array elements (any index).
    elements: Option<Box<FieldSet>>,
}

impl FieldSet {
    pub fn insert(&mut self, path: &FieldPath) {
        let mut node = self;
        for segment in &path.segments {
            node = match segment {
                Segment::Key(key) => node.keys.entry(key.clone()).or_default(),
                Segment::Index(_) | Segment::Each => node.elements.get_or_insert_default(),
            };
        }
        node.whole = true;
    }

    /// The parts of the JSON document `text` that the paths can reach.
    /// Elements of reached arrays keep their positions, so resolved paths
    /// name the same indices as in the document.
    pub fn extract(&self, text: &str) -> Result<Value, serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let value = self.seed().deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(value)
    }

    /// The set below object key `key`, if any path goes there.
    pub fn child(&self, key: &str) -> Option<&FieldSet> {
        self.keys.get(key)
    }

    /// Whether a path ends here (the whole value is read).
    pub fn is_whole(&self) -> bool {
        self.whole
    }

    /// Deserialises the part of a value this set reaches, from any serde
    /// deserializer (for parsers that read a document in one pass).
    pub fn seed(&self) -> Extract<'_> {
        Extract(self)
    }
}

/// See [`FieldSet::seed`].
pub struct Extract<'n>(&'n FieldSet);

impl<'de> DeserializeSeed<'de> for Extract<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        if self.0.whole {
            Value::deserialize(deserializer)
        } else {
            deserializer.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Extract<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kept = serde_json::Map::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match self.0.keys.get(key.as_str()) {
                Some(child) => {
                    let value = map.next_value_seed(Extract(child))?;
                    kept.insert(key.into_string(), value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(kept))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut kept = Vec::new();
        match &self.0.elements {
            Some(child) => {
                while let Some(item) = seq.next_element_seed(Extract(child))? {
                    kept.push(item);
                }
            }
            None => while seq.next_element::<IgnoredAny>()?.is_some() {},
        }
        Ok(Value::Array(kept))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// An object key, borrowed from the text unless it had escapes.
pub struct Key<'de>(Cow<'de, str>);

impl Key<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0.into_owned()
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_prints_round_trip() {
        for p in ["spec", "spec.containers[*].image", "a[0][1].b"] {
            assert_eq!(FieldPath::parse(p).unwrap().to_string(), p);
        }
    }

    #[test]
    fn rejects_malformed_paths() {
        for p in ["", "a..b", "a[", "a[x]", "a[0]b"] {
            assert!(FieldPath::parse(p).is_err(), "{p}");
        }
    }

    #[test]
    fn resolves_wildcards_to_concrete_paths() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "securityContext": {"privileged": true}},
            {"name": "b"}
        ]}});
        let path = FieldPath::parse("spec.containers[*].securityContext.privileged").unwrap();
        let found = path.resolve(&pod);
        assert_eq!(found.len(), 2);
        assert_eq!(
            found[0].path,
            "spec.containers[0].securityContext.privileged"
        );
        assert_eq!(found[0].value, Some(&json!(true)));
        assert_eq!(
            found[1].path,
            "spec.containers[1].securityContext.privileged"
        );
        assert_eq!(found[1].value, None);
    }

    #[test]
    fn missing_list_yields_nothing() {
        let path = FieldPath::parse("spec.initContainers[*].image").unwrap();
        assert!(path.resolve(&json!({"spec": {}})).is_empty());
    }

    #[test]
    fn extracted_fields_resolve_as_in_the_whole_document() {
        let text = r#"{"metadata":{"name":"web","labels":{"a/b":"1"},"managedFields":[{"x":1}]},
            "spec":{"automountServiceAccountToken":false,"hostNetwork":true,
              "containers":[{"name":"a","image":"x","securityContext":{"privileged":true}},
                            {"name":"b","securityContext":null},"odd"],
              "volumes":[{"name":"v","hostPath":{"path":"/"}}]},
            "status":{"phase":"Pending"}}"#;
        let whole: Value = serde_json::from_str(text).unwrap();
        let paths: Vec<FieldPath> = [
            "spec.automountServiceAccountToken",
            "spec.containers[*].securityContext.privileged",
            "spec.containers[1].name",
            "spec.volumes",
            "metadata.labels.a/b",
            "spec.missing[*].x",
            "spec.hostNetwork.deeper",
        ]
        .iter()
        .map(|p| FieldPath::parse(p).unwrap())
        .collect();
        let mut set = FieldSet::default();
        for path in &paths {
            set.insert(path);
        }
        let part = set.extract(text).unwrap();
        for path in &paths {
            assert_eq!(path.resolve(&part), path.resolve(&whole), "{path}");
        }
        assert!(part.get("status").is_none(), "unread fields are skipped");
        assert!(part["metadata"].get("managedFields").is_none());
        assert!(part["spec"]["containers"][0].get("image").is_none());
        assert_eq!(part["spec"]["volumes"], whole["spec"]["volumes"]);
    }

    #[test]
    fn extract_refuses_invalid_json() {
        let mut set = FieldSet::default();
        set.insert(&FieldPath::parse("spec").unwrap());
        assert!(set.extract(r#"{"spec": {"#).is_err());
        assert!(set.extract(r#"{"other": [1,}"#).is_err());
        assert!(set.extract(r#"{} trailing"#).is_err());
    }
}
