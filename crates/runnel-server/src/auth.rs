//! API keys and scopes: who may publish to which streams, consume as which groups, and
//! administer.
//!
//! It exists so the rule is written once: the middleware turns `Authorization: Bearer <key>`
//! into a [`Caller`] (401 when keys are configured and the key is missing or unknown), and
//! each handler asks the caller for the one permission its operation needs (403 when the key
//! lacks it). With no keys configured the server only listens on loopback (see
//! [`crate::ServerConfig::validate`]) and every caller may do everything.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::config::ApiKeyConfig;
use crate::problem::ApiError;

/// A name pattern: `*` matches any run of characters, everything else itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern(String);

impl NamePattern {
    pub fn matches(&self, name: &str) -> bool {
        glob(self.0.as_bytes(), name.as_bytes())
    }
}

fn glob(pattern: &[u8], name: &[u8]) -> bool {
    // Iterative wildcard match with backtracking to the last `*`.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// One permission of an API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Scope {
    /// Publish events whose stream matches.
    Publish(NamePattern),
    /// Create, describe and consume as groups whose name matches.
    Consume(NamePattern),
    /// Everything: streams, dead-letter queues, groups, the schema registry.
    Admin,
}

impl TryFrom<String> for Scope {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        // A glob over names that may only hold `a-z`, `0-9`, `_` and `-` (and `*`): anything
        // else can never match, and is refused with the fix rather than loaded.
        let pattern = |p: &str, names: &str| {
            if p.is_empty() {
                return Err(format!("scope `{text}` needs a pattern after the colon"));
            }
            if let Some(c) = p.chars().find(|c| {
                !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '*'))
            }) {
                let fix = if names == "stream names" && (c == '.' || c == '>') {
                    let domain = p.split(['.', '>']).next().unwrap_or_default();
                    format!(
                        "; scopes match {names}, not event types: for the events `{p}` names, \
                         write `publish:{}`",
                        if domain.is_empty() { "*" } else { domain }
                    )
                } else {
                    String::new()
                };
                return Err(format!(
                    "scope `{text}` can never match: {names} hold only lowercase letters, \
                     digits, `_` and `-`, with `*` for any run of them, not {c:?}{fix}"
                ));
            }
            Ok(NamePattern(p.to_string()))
        };
        match text.split_once(':') {
            None if text == "admin" => Ok(Scope::Admin),
            Some(("publish", p)) => Ok(Scope::Publish(pattern(p, "stream names")?)),
            Some(("consume", p)) => Ok(Scope::Consume(pattern(p, "group names")?)),
            _ => Err(format!(
                "unknown scope `{text}`: expected `publish:<stream pattern>`, \
                 `consume:<group pattern>` or `admin`"
            )),
        }
    }
}

impl From<Scope> for String {
    fn from(scope: Scope) -> Self {
        scope.to_string()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Publish(p) => write!(f, "publish:{}", p.0),
            Scope::Consume(p) => write!(f, "consume:{}", p.0),
            Scope::Admin => f.write_str("admin"),
        }
    }
}

/// A configured key, without its secret.
#[derive(Debug)]
pub struct KeyInfo {
    pub name: String,
    pub scopes: Vec<Scope>,
}

/// Who is calling, as the auth middleware found out.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No keys are configured: everything is allowed (loopback only).
    Open,
    Key(Arc<KeyInfo>),
}

impl Caller {
    fn allows(&self, want: impl Fn(&Scope) -> bool) -> bool {
        match self {
            Caller::Open => true,
            Caller::Key(key) => key
                .scopes
                .iter()
                .any(|s| matches!(s, Scope::Admin) || want(s)),
        }
    }

    /// The API key's name; `None` when no keys are configured.
    pub fn key_name(&self) -> Option<&str> {
        match self {
            Caller::Key(k) => Some(k.name.as_str()),
            Caller::Open => None,
        }
    }

    fn forbid(&self, needed: String) -> ApiError {
        let name = match self {
            Caller::Key(k) => k.name.as_str(),
            Caller::Open => "",
        };
        ApiError::forbidden(format!("API key `{name}` lacks the scope `{needed}`"))
    }

    /// May publish to `stream`.
    pub fn require_publish(&self, stream: &str) -> Result<(), ApiError> {
        if self.allows(|s| matches!(s, Scope::Publish(p) if p.matches(stream))) {
            Ok(())
        } else {
            Err(self.forbid(format!("publish:{stream}")))
        }
    }

    /// May configure, describe and consume as `group`.
    pub fn require_consume(&self, group: &str) -> Result<(), ApiError> {
        if self.allows(|s| matches!(s, Scope::Consume(p) if p.matches(group))) {
            Ok(())
        } else {
            Err(self.forbid(format!("consume:{group}")))
        }
    }

    /// May administer.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.allows(|_| false) {
            Ok(())
        } else {
            Err(self.forbid("admin".into()))
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        // Only routes behind `authenticate` take a `Caller`; without one, nobody was checked.
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("no credentials were checked for this route"))
    }
}

/// The configured keys, by secret.
#[derive(Debug, Default)]
pub struct Keys {
    by_secret: HashMap<String, Arc<KeyInfo>>,
}

impl Keys {
    pub fn new(keys: &[ApiKeyConfig]) -> Self {
        Self {
            by_secret: keys
                .iter()
                .map(|k| {
                    (
                        k.key.clone(),
                        Arc::new(KeyInfo {
                            name: k.name.clone(),
                            scopes: k.scopes.clone(),
                        }),
                    )
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_secret.is_empty()
    }

    /// The caller a request's headers identify.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Caller, ApiError> {
        if self.is_empty() {
            return Ok(Caller::Open);
        }
        let Some(value) = authorization else {
            return Err(ApiError::unauthorized(
                "this server requires an API key: send `Authorization: Bearer <key>`",
            ));
        };
        let token = std::str::from_utf8(value)
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer <key>`")
            })?;
        self.by_secret
            .get(token)
            .map(|k| Caller::Key(k.clone()))
            .ok_or_else(|| ApiError::unauthorized("unknown API key"))
    }
}

/// Middleware: authenticates the request and leaves the [`Caller`] in its extensions.
pub async fn authenticate(
    State(keys): State<Arc<Keys>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = keys.authenticate(
        request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
    );
    let caller = match caller {
        Ok(caller) => caller,
        Err(error) if request.uri().path().starts_with("/registry") => {
            return Ok(registry_refusal(&error, 40101));
        }
        Err(error) => return Err(error),
    };
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// A refusal under `/registry` in the shape Confluent's clients read (`error_code`, `message`;
/// 40101 unauthenticated, 40301 forbidden), not a problem document.
fn registry_refusal(error: &ApiError, error_code: u32) -> Response {
    use axum::response::IntoResponse;
    let body = serde_json::json!({ "error_code": error_code, "message": error.problem().detail });
    let mut response = (error.status(), body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(crate::routes::registry::CONTENT_TYPE),
    );
    if error.status() == axum::http::StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"runnel\""),
        );
    }
    response
}

/// Middleware for the schema registry: reading needs any valid key, changing needs `admin`.
pub async fn registry_guard(request: Request, next: Next) -> Result<Response, ApiError> {
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Open);
    if request.method() != axum::http::Method::GET
        && request.method() != axum::http::Method::HEAD
        && let Err(error) = caller.require_admin()
    {
        return Ok(registry_refusal(&error, 40301));
    }
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_that_can_never_match_are_refused_with_the_fix() {
        let error = Scope::try_from("publish:order.*".to_string()).unwrap_err();
        assert!(error.contains("can never match"), "{error}");
        assert!(error.contains("write `publish:order`"), "{error}");
        let error = Scope::try_from("consume:Billing".to_string()).unwrap_err();
        assert!(error.contains("group names"), "{error}");
        for fine in ["publish:order*", "publish:*", "consume:billing-*", "admin"] {
            assert!(Scope::try_from(fine.to_string()).is_ok(), "{fine}");
        }
    }

    #[test]
    fn patterns_match_with_stars() {
        let p = |s: &str| NamePattern(s.into());
        assert!(p("*").matches("order"));
        assert!(p("order").matches("order"));
        assert!(!p("order").matches("orders"));
        assert!(p("ord*").matches("order"));
        assert!(p("*-eu").matches("billing-eu"));
        assert!(!p("*-eu").matches("billing-us"));
        assert!(p("a*b*c").matches("aXbYc"));
        assert!(!p("a*b*c").matches("aXbY"));
    }

    #[test]
    fn scopes_parse_and_print() {
        for text in ["publish:order*", "consume:payments", "admin"] {
            let scope = Scope::try_from(text.to_string()).unwrap();
            assert_eq!(scope.to_string(), text);
        }
        for bad in ["root", "publish:", "publish", "consume", "admin:x"] {
            assert!(Scope::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_grant_only_their_scopes() {
        let keys = Keys::new(&[ApiKeyConfig {
            name: "orders".into(),
            key: "0123456789abcdef".into(),
            scopes: vec![
                Scope::try_from("publish:order".to_string()).unwrap(),
                Scope::try_from("consume:pay*".to_string()).unwrap(),
            ],
        }]);
        assert_eq!(keys.authenticate(None).unwrap_err().status().as_u16(), 401);
        assert_eq!(
            keys.authenticate(Some(b"Bearer nope"))
                .unwrap_err()
                .status()
                .as_u16(),
            401
        );
        let caller = keys.authenticate(Some(b"Bearer 0123456789abcdef")).unwrap();
        assert!(caller.require_publish("order").is_ok());
        assert_eq!(
            caller
                .require_publish("payment")
                .unwrap_err()
                .status()
                .as_u16(),
            403
        );
        assert!(caller.require_consume("payments").is_ok());
        assert!(caller.require_consume("emails").is_err());
        assert!(caller.require_admin().is_err());
    }
}
