//! SCIM errors (RFC 7644 section 3.12): an HTTP status, an optional
//! `scimType`, and a human-readable detail. Every failure the SCIM service
//! can produce ends up as one of these, rendered as the SCIM Error schema.

#[cfg(feature = "server")]
use portcullis_directory::DirectoryError;
use serde_json::{Value, json};

/// The `scimType` values of RFC 7644 table 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimType {
    InvalidFilter,
    TooMany,
    Uniqueness,
    Mutability,
    InvalidSyntax,
    InvalidPath,
    NoTarget,
    InvalidValue,
    InvalidVers,
    Sensitive,
}

impl ScimType {
    pub fn as_str(self) -> &'static str {
        match self {
            ScimType::InvalidFilter => "invalidFilter",
            ScimType::TooMany => "tooMany",
            ScimType::Uniqueness => "uniqueness",
            ScimType::Mutability => "mutability",
            ScimType::InvalidSyntax => "invalidSyntax",
            ScimType::InvalidPath => "invalidPath",
            ScimType::NoTarget => "noTarget",
            ScimType::InvalidValue => "invalidValue",
            ScimType::InvalidVers => "invalidVers",
            ScimType::Sensitive => "sensitive",
        }
    }
}

/// A SCIM error response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}{}: {detail}", .scim_type.map(|t| format!(" {}", t.as_str())).unwrap_or_default())]
pub struct ScimError {
    pub status: u16,
    pub scim_type: Option<ScimType>,
    pub detail: String,
}

impl ScimError {
    pub fn new(status: u16, scim_type: Option<ScimType>, detail: impl Into<String>) -> Self {
        ScimError {
            status,
            scim_type,
            detail: detail.into(),
        }
    }

    /// 400 with a `scimType`.
    pub fn bad_request(scim_type: ScimType, detail: impl Into<String>) -> Self {
        ScimError::new(400, Some(scim_type), detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        ScimError::new(404, None, detail)
    }

    /// The SCIM Error schema document.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": self.status.to_string(),
            "detail": self.detail,
        });
        if let (Some(t), Some(obj)) = (self.scim_type, v.as_object_mut()) {
            obj.insert("scimType".into(), json!(t.as_str()));
        }
        v
    }
}

#[cfg(feature = "server")]
impl From<DirectoryError> for ScimError {
    fn from(e: DirectoryError) -> Self {
        match &e {
            DirectoryError::NotFound { .. } => ScimError::not_found(e.to_string()),
            DirectoryError::Conflict { .. } => ScimError::new(409, Some(ScimType::Uniqueness), e.to_string()),
            DirectoryError::VersionMismatch { .. } => ScimError::new(412, None, e.to_string()),
            DirectoryError::InvalidAttribute { .. } | DirectoryError::InvalidMember { .. } => {
                ScimError::bad_request(ScimType::InvalidValue, e.to_string())
            }
            DirectoryError::Store(_) => {
                // The cause is logged by the caller; the client learns only
                // that it may retry.
                ScimError::new(503, None, "the identity store is unavailable; retry later")
            }
        }
    }
}
