//! Field paths such as `spec.containers[*].securityContext.privileged`:
//! parsed once, then resolved against JSON to the concrete paths they reach
//! (`spec.containers[1].securityContext.privileged`), which denial messages name.

use std::fmt;

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
        walk(&self.segments, Some(root), String::new(), &mut out);
        out
    }
}

fn walk<'a>(
    segments: &[Segment],
    node: Option<&'a Value>,
    at: String,
    out: &mut Vec<Resolved<'a>>,
) {
    let Some((first, rest)) = segments.split_first() else {
        out.push(Resolved {
            path: at,
            value: node.filter(|v| !v.is_null()),
        });
        return;
    };
    match first {
        Segment::Key(key) => {
            let child = node.and_then(|n| n.get(key));
            let at = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            walk(rest, child, at, out);
        }
        Segment::Index(i) => {
            let child = node.and_then(|n| n.get(i));
            walk(rest, child, format!("{at}[{i}]"), out);
        }
        Segment::Each => {
            if let Some(items) = node.and_then(Value::as_array) {
                for (i, item) in items.iter().enumerate() {
                    walk(rest, Some(item), format!("{at}[{i}]"), out);
                }
            }
        }
    }
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
}
