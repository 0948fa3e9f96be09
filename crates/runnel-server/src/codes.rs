//! Every error code the HTTP API answers with, defined once.
//!
//! A problem document's `code` is stable: clients branch on it. This table is the one place
//! codes are defined; `docs/errors.md` is generated from it (`ERROR_CODES` rendered by
//! [`markdown`], checked by a test), and [`crate::ApiError::new`] refuses, in debug builds, a
//! code that is not here. The registry under `/registry` answers Confluent's numeric codes
//! instead (see `docs/schema-registry.md`).

/// One code: what it is, the HTTP status it comes with, and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode {
    pub code: &'static str,
    pub status: u16,
    pub meaning: &'static str,
}

const fn code(code: &'static str, status: u16, meaning: &'static str) -> ErrorCode {
    ErrorCode {
        code,
        status,
        meaning,
    }
}

/// Every code, grouped by what it concerns.
pub const ERROR_CODES: &[ErrorCode] = &[
    code(
        "ack.not_recorded",
        503,
        "The acknowledgement could not be made durable; ack again.",
    ),
    code(
        "auth.forbidden",
        403,
        "The API key's scopes do not allow this.",
    ),
    code(
        "auth.unauthenticated",
        401,
        "No API key, or an unknown one.",
    ),
    code("backend.closed", 503, "The storage backend is shut down."),
    code(
        "backend.conflict",
        409,
        "A concurrent change won a compare-and-set; retry.",
    ),
    code(
        "backend.corrupt",
        500,
        "Stored data failed its checksum or could not be decoded.",
    ),
    code("backend.error", 500, "The storage engine failed."),
    code(
        "backend.invalid",
        400,
        "The storage backend refused the request as invalid.",
    ),
    code(
        "backend.storage_full",
        507,
        "The disk (or the JetStream account) is full.",
    ),
    code(
        "backend.unavailable",
        503,
        "The storage backend cannot be reached; retry.",
    ),
    code(
        "dlq.invalid_filter",
        400,
        "A dead-letter filter (class, reason, since, until) is malformed.",
    ),
    code(
        "dlq.invalid_selector",
        400,
        "A replay or purge names no entries, or names them two ways.",
    ),
    code(
        "dlq.unknown_entry",
        404,
        "No dead-letter entry with that id in the group.",
    ),
    code(
        "envelope.data_conflict",
        400,
        "Both `data` and `data_base64` are set.",
    ),
    code(
        "envelope.invalid_attribute",
        400,
        "A CloudEvents attribute breaks its rule (the field names it).",
    ),
    code(
        "envelope.invalid_event_type",
        400,
        "The type is not `domain.fact` in lowercase.",
    ),
    code(
        "envelope.invalid_extension_name",
        400,
        "An extension name is not 1–20 lowercase letters or digits.",
    ),
    code(
        "envelope.malformed_binary",
        400,
        "A stored binary event is malformed.",
    ),
    code("envelope.malformed_json", 400, "The body is not JSON."),
    code(
        "envelope.missing_attribute",
        400,
        "A required CloudEvents attribute is missing.",
    ),
    code(
        "envelope.not_an_array",
        400,
        "A batch body is not a JSON array.",
    ),
    code(
        "envelope.not_an_object",
        400,
        "An event is not a JSON object.",
    ),
    code(
        "envelope.too_large",
        413,
        "The event is larger than `max_event_bytes`.",
    ),
    code("envelope.truncated", 400, "A binary event ends early."),
    code(
        "envelope.unsupported_format_version",
        400,
        "A binary event's format version is unknown.",
    ),
    code(
        "envelope.unsupported_specversion",
        400,
        "`specversion` is not 1.0.",
    ),
    code(
        "envelope.wrong_attribute_type",
        400,
        "An attribute has the wrong JSON type.",
    ),
    code(
        "event.serialize",
        500,
        "Event data could not be serialised.",
    ),
    code(
        "feature.store_unavailable",
        503,
        "The online feature store could not be read; retry.",
    ),
    code(
        "feature.unknown_key",
        404,
        "The feature set has no value for that key yet (none of its windows has fired).",
    ),
    code(
        "feature.unknown_set",
        404,
        "No feature set of that name runs on this server (`[[features]]` in runnel.toml).",
    ),
    code(
        "group.in_use",
        409,
        "A consumer runs the group (`consumers` lists the instances); stop it, or delete with `force=true`.",
    ),
    code(
        "group.internal",
        409,
        "The group is run by the server's own stages (`saga-*`, `features-*`, `inference-*`, `trace-index`): it is not configured, pulled, acknowledged or streamed over HTTP, and is deleted only with `force=true` once no stage consumes it (while one does, even forced: `consumers` names them).",
    ),
    code(
        "group.invalid_config",
        400,
        "A group setting is out of range (the field names it).",
    ),
    code(
        "group.invalid_pattern",
        400,
        "A filter pattern no event type can match, or malformed.",
    ),
    code("group.unknown", 404, "No group with that name."),
    code(
        "model.no_shadow",
        400,
        "A comparison needs the live model's shadow: it has none, or several and `shadow` names none of them.",
    ),
    code(
        "model.unknown",
        404,
        "No model of that name runs on this server (`[[models]]` in runnel.toml).",
    ),
    code(
        "nack.reason_too_long",
        400,
        "A nack reason is over 4,096 bytes.",
    ),
    code(
        "name.invalid",
        400,
        "A stream or group name breaks the naming rule (the field names it).",
    ),
    code(
        "publish.empty_batch",
        400,
        "A batch publish holds no events.",
    ),
    code(
        "publish.invalid_utf8",
        400,
        "Binary-mode data declared as text is not UTF-8.",
    ),
    code(
        "publish.retry",
        503,
        "A duplicate's first publish failed; publish again.",
    ),
    code(
        "receipt.expired",
        409,
        "The delivery's ack_wait lapsed or its partition moved; it will come again.",
    ),
    code("receipt.unknown", 404, "No delivery with that receipt."),
    code(
        "request.body_unreadable",
        400,
        "The request body could not be read.",
    ),
    code(
        "request.headers_too_large",
        431,
        "More than 200 header fields, or more than 64 KiB of them.",
    ),
    code(
        "request.invalid_field",
        400,
        "A member of the JSON body has the wrong type or value.",
    ),
    code("request.invalid_header", 400, "A header is malformed."),
    code(
        "request.invalid_path",
        400,
        "A path parameter is malformed.",
    ),
    code(
        "request.invalid_query",
        400,
        "A query parameter is malformed or out of range.",
    ),
    code("request.malformed_json", 400, "The body is not JSON."),
    code(
        "request.not_an_object",
        400,
        "The body is JSON but not an object.",
    ),
    code(
        "request.too_large",
        413,
        "The body is larger than `max_body_bytes`.",
    ),
    code(
        "request.unsupported_media_type",
        415,
        "The Content-Type is not one this route takes.",
    ),
    code(
        "request.uri_too_long",
        414,
        "The URL is longer than 16 KiB.",
    ),
    code(
        "route.method_not_allowed",
        405,
        "The route does not take that method.",
    ),
    code("route.unknown", 404, "No such route."),
    code("runtime.closed", 503, "The runtime is shutting down."),
    code(
        "saga.failed",
        500,
        "Reading or writing the saga instance failed; the detail says why.",
    ),
    code("saga.not_found", 404, "No saga instance has that id."),
    code(
        "saga.not_stuck",
        409,
        "Only a stuck instance can be retried; this one is running, compensating or done.",
    ),
    code(
        "saga.unknown",
        404,
        "No saga of that type is declared on this server (`[[sagas]]` in runnel.toml).",
    ),
    code(
        "schema.data_not_json",
        400,
        "A type with a schema got data that is not JSON.",
    ),
    code(
        "schema.invalid",
        400,
        "The data fails its schema (every failing path listed).",
    ),
    code(
        "schema.missing",
        400,
        "The type has no schema and `require_schema` is on.",
    ),
    code(
        "schema.subject_deleted",
        400,
        "The type's schema subject is soft-deleted; name a version or register again.",
    ),
    code(
        "schema.unavailable",
        503,
        "The schema registry's storage cannot be reached.",
    ),
    code(
        "schema.unknown_version",
        400,
        "The event names a schema version the registry does not have.",
    ),
    code("server.not_ready", 503, "The server is starting."),
    code(
        "server.shutting_down",
        503,
        "The server is stopping; retry elsewhere.",
    ),
    code(
        "stream.exists",
        409,
        "The stream exists with another partition count or retention.",
    ),
    code(
        "stream.in_use",
        409,
        "Groups read the stream (`groups` lists them), or a feature set or model of the server publishes its results into it (`stages`); delete or change them, or delete with `force=true`.",
    ),
    code(
        "stream.internal",
        409,
        "The stream is a group's replay stream (`replay-<group>`); deleting the group removes it, or delete with `force=true`.",
    ),
    code(
        "stream.invalid_partitions",
        400,
        "A partition count is out of range.",
    ),
    code(
        "stream.offset_out_of_range",
        400,
        "The offset is beyond the stream's end or removed by retention.",
    ),
    code("stream.unknown", 404, "No stream with that name."),
    code(
        "stream.unknown_partition",
        404,
        "The stream has no such partition.",
    ),
    code(
        "tls.required",
        400,
        "Plain HTTP was sent to a port that speaks HTTPS.",
    ),
    code(
        "trace.disabled",
        404,
        "The correlation index is off on this server (`trace_index = false`).",
    ),
    code(
        "trace.unknown",
        404,
        "No event is indexed under that correlation id (yet: the index follows the log).",
    ),
];

/// Whether `code` is one of [`ERROR_CODES`].
pub fn is_known(code: &str) -> bool {
    ERROR_CODES.iter().any(|c| c.code == code)
}

/// `docs/errors.md`: the catalogue as a document.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Error codes\n\n\
         Every error of the HTTP API is an RFC 9457 problem document (`application/problem+json`) \
         whose `code` is one of these, stable across versions; `errors` lists the failing fields \
         as JSON pointers where there are any. The schema registry under `/registry` answers \
         Confluent's numeric `error_code`s instead (see `schema-registry.md`).\n\n\
         Generated from `crates/runnel-server/src/codes.rs` (a test keeps the two equal).\n\n\
         | code | status | meaning |\n| --- | --- | --- |\n",
    );
    for c in ERROR_CODES {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            c.code, c.status, c.meaning
        ));
    }
    out
}
