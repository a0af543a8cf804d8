//! `images/allowedRegistries`: every image comes from a listed registry.

use super::RuleId;
use crate::policy::images::ImageRef;
use crate::policy::{ContainerPath, Finding};

/// The finding for `image` (of `container`), if it comes from none of the
/// `allowed` registries; an empty list allows every registry.
pub(crate) fn check(
    allowed: &[String],
    container: ContainerPath,
    image: &str,
    parsed: &ImageRef<'_>,
) -> Option<Finding> {
    if allowed.is_empty() || allowed.iter().any(|r| parsed.is_from(r)) {
        return None;
    }
    Some(Finding {
        rule: RuleId::AllowedRegistries.to_string(),
        path: format!("{container}.image"),
        message: format!(
            "image {image:?} is not from an allowed registry ({})",
            allowed.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::images::parse;

    const FIRST: ContainerPath = ContainerPath {
        list: "spec.containers",
        index: 0,
    };

    fn check_image(allowed: &[&str], image: &str) -> Option<Finding> {
        let allowed: Vec<String> = allowed.iter().map(|r| r.to_string()).collect();
        check(&allowed, FIRST, image, &parse(image))
    }

    #[test]
    fn an_image_from_an_unlisted_registry_is_named_at_its_image_field() {
        let finding = check_image(&["ghcr.io"], "quay.io/acme/api:1").unwrap();
        assert_eq!(finding.rule, "images/allowedRegistries");
        assert_eq!(finding.path, "spec.containers[0].image");
    }

    #[test]
    fn listed_registries_and_an_empty_list_allow_the_image() {
        assert_eq!(check_image(&["ghcr.io"], "ghcr.io/acme/api:1"), None);
        assert_eq!(check_image(&[], "quay.io/acme/api:1"), None);
    }
}
