//! The admission rules that are not Pod Security controls, one file per
//! rule, and [`RuleId`]: the ids every finding is reported under.

pub mod custom;
pub(crate) mod enforcer;
pub(crate) mod registries;
pub(crate) mod resources;
pub(crate) mod tags;
pub(crate) mod untagged;

use std::fmt;

use super::pss::ControlId;

/// A rule as policies, PolicyExceptions and reports name it. The ids are
/// an API: exceptions written against them must keep matching, so they
/// are spelled here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleId<'a> {
    /// A Pod Security control (`podSecurity/<control>`).
    PodSecurity(ControlId),
    AllowedRegistries,
    DisallowedTags,
    DisallowUntagged,
    RequiredResources,
    RequireEnforcer,
    /// A policy's own rule, by its name (`custom/<name>`).
    Custom(&'a str),
}

impl fmt::Display for RuleId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleId::PodSecurity(control) => write!(f, "podSecurity/{control}"),
            RuleId::AllowedRegistries => f.write_str("images/allowedRegistries"),
            RuleId::DisallowedTags => f.write_str("images/disallowedTags"),
            RuleId::DisallowUntagged => f.write_str("images/disallowUntagged"),
            RuleId::RequiredResources => f.write_str("resources/required"),
            RuleId::RequireEnforcer => f.write_str("enforcer/required"),
            RuleId::Custom(name) => write!(f, "custom/{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_keep_the_spelling_exceptions_and_reports_match() {
        let ids = [
            (
                RuleId::PodSecurity(ControlId::Privileged),
                "podSecurity/privileged",
            ),
            (RuleId::AllowedRegistries, "images/allowedRegistries"),
            (RuleId::DisallowedTags, "images/disallowedTags"),
            (RuleId::DisallowUntagged, "images/disallowUntagged"),
            (RuleId::RequiredResources, "resources/required"),
            (RuleId::RequireEnforcer, "enforcer/required"),
            (RuleId::Custom("team"), "custom/team"),
        ];
        for (id, spelled) in ids {
            assert_eq!(id.to_string(), spelled);
        }
    }
}
