//! RFC 9457 problem details, the body of every error response.

use serde::{Deserialize, Serialize};

/// One field of a request that is wrong, by JSON Pointer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// JSON Pointer to the offending value, for example `/config/port`.
    pub pointer: String,
    /// What is wrong with it and what to write instead.
    pub message: String,
}

/// An error response (`application/problem+json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type", default = "about_blank")]
    pub kind: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this request and how to fix it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The fields that are wrong, when the request body is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

fn about_blank() -> String {
    "about:blank".into()
}

impl Problem {
    /// A problem with a status, a kind slug (`/problems/{slug}`) and a detail.
    pub fn new(status: u16, slug: &str, title: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("https://culvert.dev/problems/{slug}"),
            title: title.into(),
            status,
            detail: Some(detail.into()),
            errors: Vec::new(),
        }
    }

    /// The detail, or the title when there is none.
    pub fn message(&self) -> String {
        let mut text = self.detail.clone().unwrap_or_else(|| self.title.clone());
        for e in &self.errors {
            text.push_str(&format!("; {}: {}", e.pointer, e.message));
        }
        text
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message(), self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_each_field() {
        let mut p = Problem::new(
            422,
            "invalid-body",
            "Invalid request body",
            "2 fields are wrong",
        );
        p.errors.push(FieldError {
            pointer: "/config/port".into(),
            message: "must be at most 65535".into(),
        });
        assert_eq!(
            p.message(),
            "2 fields are wrong; /config/port: must be at most 65535"
        );
        let back: Problem = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}
