//! Custom rules: a field path, an operator and a value, compiled once.

use palisade_common::path::FieldPath;
use palisade_common::policy::{CustomRule, Operator};
use regex::Regex;
use serde_json::Value;

use super::RuleId;
use crate::policy::Finding;

#[derive(Debug)]
pub struct CompiledRule {
    rule: CustomRule,
    path: FieldPath,
    regex: Option<Regex>,
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("custom rule {name:?}: {reason}")]
    Invalid { name: String, reason: String },
}

impl CompiledRule {
    pub fn compile(rule: &CustomRule) -> Result<Self, CompileError> {
        let invalid = |reason: String| CompileError::Invalid {
            name: rule.name.clone(),
            reason,
        };
        let path = FieldPath::parse(&rule.path).map_err(|e| invalid(e.to_string()))?;
        let regex = match (rule.operator, &rule.value) {
            (Operator::Matches, Some(Value::String(re))) => {
                Some(Regex::new(re).map_err(|e| invalid(format!("invalid regex: {e}")))?)
            }
            (Operator::Matches, _) => return Err(invalid("Matches needs a string value".into())),
            _ => None,
        };
        Ok(Self {
            rule: rule.clone(),
            path,
            regex,
        })
    }

    pub fn path(&self) -> &FieldPath {
        &self.path
    }

    /// Findings for every location where the condition does not hold.
    pub fn evaluate(&self, pod: &Value) -> Vec<Finding> {
        self.path
            .resolve(pod)
            .into_iter()
            .filter_map(|at| {
                let problem = self.problem(at.value)?;
                Some(Finding {
                    rule: RuleId::Custom(&self.rule.name).to_string(),
                    path: at.path,
                    message: self.rule.message.clone().unwrap_or(problem),
                })
            })
            .collect()
    }

    /// Why `found` breaks the rule, or `None` when it holds.
    fn problem(&self, found: Option<&Value>) -> Option<String> {
        let expected = self.rule.value.as_ref();
        let shown = |v: Option<&Value>| v.map_or("nothing".to_string(), Value::to_string);
        let listed = |v: &Value| {
            expected
                .and_then(Value::as_array)
                .is_some_and(|l| l.contains(v))
        };
        let holds = match self.rule.operator {
            Operator::Exists => found.is_some(),
            Operator::NotExists => found.is_none(),
            Operator::Equals => found.is_some() && found == expected,
            Operator::NotEquals => found != expected,
            Operator::In => found.is_some_and(listed),
            Operator::NotIn => !found.is_some_and(listed),
            Operator::Matches => found
                .and_then(Value::as_str)
                .zip(self.regex.as_ref())
                .is_some_and(|(s, re)| re.is_match(s)),
        };
        if holds {
            return None;
        }
        Some(match self.rule.operator {
            Operator::Exists => "must be set".to_string(),
            Operator::NotExists => format!("must not be set (found {})", shown(found)),
            op => format!(
                "must satisfy {op:?} {} (found {})",
                shown(expected),
                shown(found)
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(path: &str, operator: Operator, value: Option<Value>) -> CompiledRule {
        CompiledRule::compile(&CustomRule {
            name: "r".into(),
            path: path.into(),
            operator,
            value,
            message: None,
        })
        .unwrap()
    }

    fn pod() -> Value {
        json!({"spec": {"automountServiceAccountToken": false, "containers": [
            {"name": "a", "imagePullPolicy": "Always"},
            {"name": "b", "imagePullPolicy": "IfNotPresent"},
            {"name": "c"}
        ]}})
    }

    fn paths(findings: Vec<Finding>) -> Vec<String> {
        findings.into_iter().map(|f| f.path).collect()
    }

    #[test]
    fn equals_reports_each_failing_container() {
        let r = rule(
            "spec.containers[*].imagePullPolicy",
            Operator::Equals,
            Some(json!("Always")),
        );
        assert_eq!(
            paths(r.evaluate(&pod())),
            [
                "spec.containers[1].imagePullPolicy",
                "spec.containers[2].imagePullPolicy"
            ]
        );
    }

    #[test]
    fn in_not_in_exists_matches() {
        let r = rule(
            "spec.containers[*].imagePullPolicy",
            Operator::In,
            Some(json!(["Always", "IfNotPresent"])),
        );
        assert_eq!(
            paths(r.evaluate(&pod())),
            ["spec.containers[2].imagePullPolicy"]
        );
        let r = rule(
            "spec.containers[*].imagePullPolicy",
            Operator::NotIn,
            Some(json!(["Never"])),
        );
        assert!(r.evaluate(&pod()).is_empty());
        let r = rule("spec.automountServiceAccountToken", Operator::Exists, None);
        assert!(r.evaluate(&pod()).is_empty());
        let r = rule("spec.hostAliases", Operator::NotExists, None);
        assert!(r.evaluate(&pod()).is_empty());
        let r = rule(
            "spec.containers[*].name",
            Operator::Matches,
            Some(json!("^[ab]$")),
        );
        assert_eq!(paths(r.evaluate(&pod())), ["spec.containers[2].name"]);
        let r = rule(
            "spec.automountServiceAccountToken",
            Operator::NotEquals,
            Some(json!(true)),
        );
        assert!(r.evaluate(&pod()).is_empty());
    }

    #[test]
    fn bad_regex_is_a_compile_error() {
        let err = CompiledRule::compile(&CustomRule {
            name: "r".into(),
            path: "spec".into(),
            operator: Operator::Matches,
            value: Some(json!("(")),
            message: None,
        })
        .unwrap_err();
        assert!(err.to_string().contains("invalid regex"), "{err}");
    }
}
