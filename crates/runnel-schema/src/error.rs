//! The errors of the registry, one enum per kind of call: [`RegistryError`] for registry
//! operations, [`ValidationError`] for validating event data, [`InvalidSchema`] for a schema
//! that cannot be stored. Each names the subject, version, id or path at fault; Confluent's
//! error codes and HTTP statuses are given in one place ([`RegistryError::error_code`],
//! [`RegistryError::http_status`]) for the server's registry routes.

use std::fmt;

use runnel_backend::BackendError;
use serde::{Deserialize, Serialize};

use crate::mode::CompatibilityMode;
use crate::{SchemaId, VersionRef};

/// Why a schema cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSchema {
    /// Not valid JSON Schema of a supported draft; `path` points into the schema (empty for
    /// the root).
    #[error("invalid schema at `{}`: {message}", display_path(path))]
    Invalid { path: String, message: String },
    /// Larger than the registry's `max_schema_bytes`.
    #[error("schema is {bytes} bytes; the limit is {max} bytes")]
    TooLarge { bytes: usize, max: usize },
    /// `schemaType` other than `JSON`.
    #[error(
        "schema type `{0}` is not supported: Runnel's registry holds JSON Schema only \
         (schemaType JSON)"
    )]
    UnsupportedType(String),
    /// Confluent schema references, metadata or rule sets, which Runnel does not implement.
    #[error(
        "`{0}` is not supported: a schema must be self-contained (use `$defs` and local `$ref`s)"
    )]
    Unsupported(&'static str),
}

impl InvalidSchema {
    /// [`Self::Invalid`] at `path`, a JSON pointer into the schema (empty for the root), or
    /// into the request that carried it.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

fn display_path(path: &str) -> &str {
    if path.is_empty() { "/" } else { path }
}

/// An error of a registry operation.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("subject `{subject}` not found")]
    SubjectNotFound { subject: String },

    #[error("version {version} of subject `{subject}` not found")]
    VersionNotFound {
        subject: String,
        version: VersionRef,
    },

    #[error("schema {id} not found")]
    SchemaIdNotFound { id: SchemaId },

    #[error("schema not found under subject `{subject}`")]
    SchemaNotInSubject { subject: String },

    #[error("subject `{subject}` was soft deleted; set permanent=true to delete it permanently")]
    SubjectSoftDeleted { subject: String },

    #[error("subject `{subject}` must be soft deleted before it is deleted permanently")]
    SubjectNotSoftDeleted { subject: String },

    #[error(
        "version {version} of subject `{subject}` was soft deleted; set permanent=true to delete \
         it permanently"
    )]
    VersionSoftDeleted { subject: String, version: u32 },

    #[error(
        "version {version} of subject `{subject}` must be soft deleted before it is deleted \
         permanently"
    )]
    VersionNotSoftDeleted { subject: String, version: u32 },

    #[error("subject `{subject}` has no subject-level compatibility configured")]
    SubjectConfigNotSet { subject: String },

    #[error(transparent)]
    InvalidSchema(#[from] InvalidSchema),

    #[error(
        "schema is incompatible with subject `{subject}` under {mode}: {}",
        reasons.join("; ")
    )]
    Incompatible {
        subject: String,
        mode: CompatibilityMode,
        reasons: Vec<String>,
    },

    #[error("invalid subject `{subject}`: {reason}")]
    InvalidSubject { subject: String, reason: String },

    #[error("invalid version `{given}`: a version is a positive integer or `latest`")]
    InvalidVersion { given: String },

    #[error(
        "`{rust_type}` declares version {declared} of `{subject}`, but {actual}; bump \
         SCHEMA_VERSION or register the schema that version {declared} holds"
    )]
    TypeVersionMismatch {
        rust_type: &'static str,
        subject: String,
        declared: u32,
        actual: String,
    },

    /// Concurrent writers kept winning the compare-and-set; nothing was written.
    #[error("too many concurrent changes to `{key}`; try again")]
    Contention { key: String },

    /// A stored record could not be read back.
    #[error("corrupt registry record `{bucket}/{key}`: {message}")]
    Corrupt {
        bucket: &'static str,
        key: String,
        message: String,
    },

    #[error("storage: {0}")]
    Backend(#[from] BackendError),
}

impl RegistryError {
    /// The Confluent error code: `40401` subject not found, `40402` version not found,
    /// `40403` schema not found, `40404`/`40405` subject (not) soft deleted, `40406`/`40407`
    /// version (not) soft deleted, `40408` no subject compatibility, `409` incompatible,
    /// `42201` invalid schema, `42202` invalid version, `42208` invalid subject, `42209`
    /// schema too large, `50001` storage, `50002` contention.
    pub fn error_code(&self) -> u32 {
        match self {
            Self::SubjectNotFound { .. } => 40401,
            Self::VersionNotFound { .. } => 40402,
            Self::SchemaIdNotFound { .. } | Self::SchemaNotInSubject { .. } => 40403,
            Self::SubjectSoftDeleted { .. } => 40404,
            Self::SubjectNotSoftDeleted { .. } => 40405,
            Self::VersionSoftDeleted { .. } => 40406,
            Self::VersionNotSoftDeleted { .. } => 40407,
            Self::SubjectConfigNotSet { .. } => 40408,
            Self::Incompatible { .. } => 409,
            Self::InvalidSchema(InvalidSchema::TooLarge { .. }) => 42209,
            Self::InvalidSchema(_) | Self::TypeVersionMismatch { .. } => 42201,
            Self::InvalidVersion { .. } => 42202,
            Self::InvalidSubject { .. } => 42208,
            Self::Contention { .. } => 50002,
            Self::Corrupt { .. } | Self::Backend(_) => 50001,
        }
    }

    /// The HTTP status that goes with [`Self::error_code`].
    pub fn http_status(&self) -> u16 {
        match self.error_code() {
            409 => 409,
            code => (code / 100) as u16,
        }
    }
}

/// One failing location of event data: a JSON pointer into the data (empty for the root)
/// and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", display_path(&self.path), self.message)
    }
}

/// Why event data was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    /// The data does not match the schema; every failing path is listed.
    #[error(
        "data does not match schema `{subject}` version {version}: {}",
        errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Invalid {
        subject: String,
        version: u32,
        errors: Vec<FieldError>,
    },
    /// The subject has no schema and `require_schema` is on.
    #[error("no schema is registered for `{subject}`, and the registry requires one")]
    NoSchema { subject: String },
    /// Data names no version, and every version of the subject is soft deleted: there is no
    /// latest version to validate it against, and the subject has not gone either.
    #[error(
        "every version of `{subject}` was soft deleted, so it has no latest schema: register \
         its schema again, name a version, or delete the subject permanently"
    )]
    SubjectDeleted { subject: String },
    /// The schema could not be loaded (unknown version, storage).
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl ValidationError {
    /// The failing paths, when the data was invalid.
    pub fn errors(&self) -> &[FieldError] {
        match self {
            Self::Invalid { errors, .. } => errors,
            _ => &[],
        }
    }
}
