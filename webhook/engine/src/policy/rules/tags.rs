//! `images/disallowedTags`: no image uses a listed tag (`latest`, say).

use super::RuleId;
use crate::policy::images::ImageRef;
use crate::policy::{ContainerPath, Finding};

/// The finding for `image` (of `container`), if its tag is `disallowed`.
pub(crate) fn check(
    disallowed: &[String],
    container: ContainerPath,
    image: &str,
    parsed: &ImageRef<'_>,
) -> Option<Finding> {
    let tag = parsed.tag.filter(|t| disallowed.iter().any(|d| d == t))?;
    Some(Finding {
        rule: RuleId::DisallowedTags.to_string(),
        path: format!("{container}.image"),
        message: format!("image tag {tag:?} is not allowed ({image:?})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::images::parse;

    fn check_image(image: &str) -> Option<Finding> {
        let first = ContainerPath {
            list: "spec.initContainers",
            index: 1,
        };
        check(&["latest".to_string()], first, image, &parse(image))
    }

    #[test]
    fn a_disallowed_tag_is_named_at_its_image_field() {
        let finding = check_image("nginx:latest").unwrap();
        assert_eq!(finding.rule, "images/disallowedTags");
        assert_eq!(finding.path, "spec.initContainers[1].image");
    }

    #[test]
    fn other_tags_and_untagged_images_pass() {
        assert_eq!(check_image("nginx:1.27"), None);
        assert_eq!(check_image("nginx"), None);
    }
}
