//! The body of every error answer: an RFC 9457 problem document.

use serde::{Deserialize, Serialize};

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document, the body of every error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProblemDocument {
    /// A URI naming the kind of problem, e.g. `urn:sessiond:problem:unauthorized`.
    pub r#type: String,
    /// Short summary.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What happened and what to do; never contains a token.
    pub detail: String,
}

impl ProblemDocument {
    /// The `type` URI of a problem of `status` (whose reason phrase is `reason`): stable per
    /// status, `urn:sessiond:problem:` and the reason in lowercase words joined by `-`.
    pub fn type_for(reason: &str) -> String {
        let mut s = String::from("urn:sessiond:problem:");
        for c in reason.chars() {
            if c.is_ascii_alphanumeric() {
                s.push(c.to_ascii_lowercase());
            } else if !s.ends_with('-') {
                s.push('-');
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_types_are_the_reason_in_lowercase_words() {
        assert_eq!(
            ProblemDocument::type_for("Payload Too Large"),
            "urn:sessiond:problem:payload-too-large"
        );
        assert_eq!(
            ProblemDocument::type_for("Unauthorized"),
            "urn:sessiond:problem:unauthorized"
        );
    }
}
