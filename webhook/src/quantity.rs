//! Kubernetes resource quantities (`100m`, `128Mi`, `1.5`, `1e3`): syntax
//! check only, so bad defaults or annotations fail with a clear message
//! instead of a pod the apiserver rejects later.

use std::sync::OnceLock;

use regex::Regex;

pub fn is_valid_quantity(text: &str) -> bool {
    static QUANTITY: OnceLock<Regex> = OnceLock::new();
    QUANTITY
        .get_or_init(|| {
            Regex::new(r"^[+]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?$")
                .expect("static regex")
        })
        .is_match(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kubernetes_quantities() {
        for q in ["100m", "1", "0.5", "128Mi", "1Gi", "2e3", "1.5G", ".5"] {
            assert!(is_valid_quantity(q), "{q}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for q in ["", "abc", "1 Gi", "1GB", "-1", "1..2", "Mi"] {
            assert!(!is_valid_quantity(q), "{q}");
        }
    }
}
