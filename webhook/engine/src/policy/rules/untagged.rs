//! `images/disallowUntagged`: every image names a tag or a digest, since
//! a bare name silently means `:latest`.

use super::RuleId;
use crate::policy::images::ImageRef;
use crate::policy::{ContainerPath, Finding};

/// The finding for `image` (of `container`), if the rule is on and the
/// image has neither tag nor digest.
pub(crate) fn check(
    disallow: bool,
    container: ContainerPath,
    image: &str,
    parsed: &ImageRef<'_>,
) -> Option<Finding> {
    if !disallow || parsed.tag.is_some() || parsed.digest.is_some() {
        return None;
    }
    Some(Finding {
        rule: RuleId::DisallowUntagged.to_string(),
        path: format!("{container}.image"),
        message: format!("image {image:?} has no tag or digest (implies :latest)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::images::parse;

    fn check_image(disallow: bool, image: &str) -> Option<Finding> {
        let first = ContainerPath {
            list: "spec.containers",
            index: 0,
        };
        check(disallow, first, image, &parse(image))
    }

    #[test]
    fn an_image_without_tag_or_digest_is_refused_when_the_rule_is_on() {
        let finding = check_image(true, "nginx").unwrap();
        assert_eq!(finding.rule, "images/disallowUntagged");
        assert_eq!(check_image(false, "nginx"), None);
    }

    #[test]
    fn a_tag_or_a_digest_is_enough() {
        assert_eq!(check_image(true, "nginx:1.27"), None);
        assert_eq!(check_image(true, "nginx@sha256:abc"), None);
    }
}
