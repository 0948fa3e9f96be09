//! The whole of `runnel.toml`: the server's settings and the storage settings, layered
//! defaults → file → `RUNNEL_*` environment variables → command-line flags.
//!
//! It lives in the binary because the binary is the composition root: it alone knows both the
//! server and the storage crates. Every way of setting a value goes through the same names and
//! the same checks: the file uses the field names, the environment the same names upper-cased
//! behind `RUNNEL_` (`bind` ← `RUNNEL_BIND`, `fsync` ← `RUNNEL_FSYNC`), and flags overwrite
//! fields after both. `runnel config show` prints the result.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use runnel_backend::{Backend, BackendError};
use runnel_backends::BackendSettings;
use runnel_inference::{InferenceStage, ModelSpec, StageOptions, validate_models};
use runnel_server::{App, ConfigError, Server, ServerConfig};
use runnel_stages::{FeaturePipeline, FeatureSpec, PipelineOptions, validate_features};
use serde::{Deserialize, Serialize};

/// Everything `runnel serve` can be told, as one flat `runnel.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunnelConfig {
    #[serde(flatten)]
    pub server: ServerConfig,
    #[serde(flatten)]
    pub storage: BackendSettings,
    /// `[[features]]`: feature pipelines run beside the server, one per table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<FeatureSpec>,
    /// `[[sagas]]`: saga types the server runs (see docs/sagas.md and `crate::saga_config`).
    #[serde(default)]
    pub sagas: Vec<runnel_saga::SagaSpec>,
    /// `[[models]]`: inference stages run beside the server, one per table (see
    /// docs/inference.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelSpec>,
}

/// The key of the `[[features]]` tables (not in the defaults: there are none by default).
const FEATURES_KEY: &str = "features";

/// The key of the `[[models]]` tables (likewise).
const MODELS_KEY: &str = "models";

/// Environment variables starting with this prefix may set a field.
pub const ENV_PREFIX: &str = "RUNNEL_";

/// The file read when no path is given, if it exists.
pub const DEFAULT_FILE: &str = "runnel.toml";

impl RunnelConfig {
    /// Defaults, then the file (`path`, or `runnel.toml` in the working directory if it exists),
    /// then the environment variables (`RUNNEL_<FIELD>`; others starting with `RUNNEL_` are
    /// left alone, they belong to other parts of Runnel). Not yet validated: flags come next.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let file = match path {
            Some(path) => Some(read_file(path)?),
            None => {
                let default = Path::new(DEFAULT_FILE);
                if default.exists() {
                    Some(read_file(default)?)
                } else {
                    None
                }
            }
        };
        Self::layered(file.as_ref().map(|(p, t)| (p.as_path(), t.as_str())), env)
    }

    /// Defaults, then a file's text, then environment variables.
    pub fn layered(
        file: Option<(&Path, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let defaults = toml::Table::try_from(Self::default())
            .map_err(|e| ConfigError::Invalid(format!("defaults: {e}")))?;
        let mut table = defaults.clone();
        if let Some((path, text)) = file {
            let from_file: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::File {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    })?;
            for (key, value) in from_file {
                if key == FEATURES_KEY || key == MODELS_KEY {
                    let checked = if key == FEATURES_KEY {
                        check_tables::<FeatureSpec>(FEATURES_KEY, &value)
                    } else {
                        check_tables::<ModelSpec>(MODELS_KEY, &value)
                    };
                    checked.map_err(|message| ConfigError::File {
                        path: path.to_path_buf(),
                        message,
                    })?;
                    table.insert(key, value);
                    continue;
                }
                if !defaults.contains_key(&key) {
                    let mut known: Vec<&str> = defaults.keys().map(String::as_str).collect();
                    known.push(FEATURES_KEY);
                    known.push(MODELS_KEY);
                    known.sort_unstable();
                    return Err(ConfigError::File {
                        path: path.to_path_buf(),
                        message: format!(
                            "unknown field `{key}`, expected one of {}",
                            known.join(", ")
                        ),
                    });
                }
                table.insert(key, value);
            }
            // Typed check now, so a bad file is blamed on the file and not on a variable.
            toml::Value::Table(table.clone())
                .try_into::<Self>()
                .map_err(|e| ConfigError::File {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
        }
        let mut env: Vec<(String, String)> = env.into_iter().collect();
        env.sort();
        for (var, raw) in env {
            let Some(name) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let field = name.to_ascii_lowercase();
            let Some(default) = defaults.get(&field) else {
                continue;
            };
            let value = env_value(default, &raw).map_err(|message| ConfigError::Env {
                var: var.clone(),
                message,
            })?;
            table.insert(field, value);
            toml::Value::Table(table.clone())
                .try_into::<Self>()
                .map_err(|e| ConfigError::Env {
                    var: var.clone(),
                    message: e.to_string(),
                })?;
        }
        toml::Value::Table(table)
            .try_into::<Self>()
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }
}

impl RunnelConfig {
    /// Checks every part: the server's settings, the storage settings and the features.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.storage
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        crate::saga_config::validate(&self.sagas)?;
        validate_features(&self.features).map_err(|errors| {
            ConfigError::Invalid(
                errors
                    .errors()
                    .iter()
                    .map(|e| format!("{}: {}", self.name_feature_path(&e.path), e.problem))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        self.validate_models()
    }

    /// The `[[models]]` rules, and that each feature input names a `[[features]]` set of this
    /// file and one of its aggregates (the stage reads the online store those sets write).
    fn validate_models(&self) -> Result<(), ConfigError> {
        let mut problems: Vec<(String, String)> = match validate_models(&self.models) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.problems,
        };
        for (i, model) in self.models.iter().enumerate() {
            for (j, input) in model.inputs.iter().enumerate() {
                let Some((set, aggregate)) =
                    input.feature.as_deref().and_then(|f| f.split_once('.'))
                else {
                    continue;
                };
                let path = format!("models[{i}].inputs[{j}].feature");
                match self.features.iter().find(|f| f.name == set) {
                    None => {
                        let there: Vec<&str> =
                            self.features.iter().map(|f| f.name.as_str()).collect();
                        problems.push((
                            path,
                            format!(
                                "no [[features]] set `{set}` in this file (the sets are: {})",
                                if there.is_empty() {
                                    "none".to_string()
                                } else {
                                    there.join(", ")
                                }
                            ),
                        ));
                    }
                    Some(feature) if !feature.aggregates.iter().any(|a| a.name == aggregate) => {
                        problems.push((
                            path,
                            format!("feature set `{set}` has no aggregate `{aggregate}`"),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(ConfigError::Invalid(
            problems
                .iter()
                .map(|(path, problem)| format!("{}: {problem}", self.name_path(path)))
                .collect::<Vec<_>>()
                .join("; "),
        ))
    }

    /// `features[0].window.slide` → `features[0] (card_spend).window.slide`.
    fn name_feature_path(&self, path: &str) -> String {
        self.name_path(path)
    }

    /// `features[0].x` → `features[0] (card_spend).x`, `models[1].y` → `models[1] (fraud).y`.
    fn name_path(&self, path: &str) -> String {
        let (key, names): (&str, Vec<&str>) = if path.starts_with("features[") {
            (
                "features",
                self.features.iter().map(|f| f.name.as_str()).collect(),
            )
        } else if path.starts_with("models[") {
            (
                "models",
                self.models.iter().map(|m| m.name.as_str()).collect(),
            )
        } else {
            return path.to_string();
        };
        let rest = &path[key.len() + 1..];
        let Some((index, field)) = rest.split_once(']') else {
            return path.to_string();
        };
        match index.parse::<usize>().ok().and_then(|i| names.get(i)) {
            Some(name) if !name.is_empty() => format!("{key}[{index}] ({name}){field}"),
            _ => path.to_string(),
        }
    }

    /// A copy with secrets replaced, for printing and logging.
    pub fn redacted(&self) -> Self {
        Self {
            server: self.server.redacted(),
            storage: self.storage.redacted(),
            features: self.features.clone(),
            sagas: self.sagas.clone(),
            models: self.models.clone(),
        }
    }

    /// The effective values as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Opens the configured backend over the server's data directory.
    pub async fn open_backend(&self) -> Result<Arc<dyn Backend>, BackendError> {
        let dedup_window = Duration::from_secs(self.server.dedup_window_secs);
        self.storage.open(&self.server.data_dir, dedup_window).await
    }

    /// Opens the backend, binds a server over it and starts the feature pipelines beside it:
    /// what `runnel serve` runs. The server stops the pipelines when it stops.
    pub async fn bind(self) -> anyhow::Result<Server> {
        self.validate()?;
        let sagas = crate::saga_config::validate(&self.sagas)?;
        let backend = self.open_backend().await?;
        let mut app = App::open(self.server, backend)?;
        app.run_sagas(sagas)?;
        let server = Server::with_app(app).await?;
        for spec in self.features {
            let name = spec.name.clone();
            let app = server.app();
            let options = PipelineOptions {
                // The server's id: a restarted server takes the pipeline's leases back at once.
                instance_id: app.instance_id().map(str::to_string),
                store: Some(app.features().store().clone()),
                ..PipelineOptions::default()
            };
            let handle = FeaturePipeline::start(app.runnel(), spec.clone(), options)
                .await
                .with_context(|| format!("starting feature pipeline `{name}`"))?;
            tracing::info!(feature = name.as_str(), "feature pipeline started");
            app.features().add(spec, handle);
        }
        if !self.models.is_empty() && !server.app().capture_stage_metrics() {
            tracing::info!(
                "another metrics recorder is the process's: runnel_predictions_total and the breaker metrics are not in this server's /metrics"
            );
        }
        for spec in self.models {
            let name = spec.name.clone();
            let app = server.app();
            let options = StageOptions {
                // The server's id: a restarted server takes the stage's leases back at once.
                instance_id: app.instance_id().map(str::to_string),
                // Feature inputs are read from the store the server's [[features]] write.
                store: Some(app.features().store().clone()),
                ..StageOptions::default()
            };
            let handle = InferenceStage::start(app.runnel(), spec.clone(), options)
                .await
                .with_context(|| format!("starting model `{name}`"))?;
            tracing::info!(
                model = name.as_str(),
                version = handle.scorer().slot().current().info().version.as_str(),
                "inference stage started"
            );
            app.models().add(spec, handle);
        }
        Ok(server)
    }
}

/// Reads each `[[features]]` or `[[models]]` table on its own, so an error names the table
/// (index and name) before the field: `features[1] (card_spend): unknown field `sise`, …`.
fn check_tables<T: serde::de::DeserializeOwned>(
    key: &str,
    value: &toml::Value,
) -> Result<(), String> {
    let toml::Value::Array(tables) = value else {
        return Err(format!(
            "`{key}` must be an array of tables (`[[{key}]]`), got a {}",
            value.type_str()
        ));
    };
    for (i, table) in tables.iter().enumerate() {
        let named = match table.get("name").and_then(toml::Value::as_str) {
            Some(name) => format!("{key}[{i}] ({name})"),
            None => format!("{key}[{i}]"),
        };
        T::deserialize(table.clone())
            .map_err(|e| format!("{named}: {}", e.to_string().trim_end()))?;
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<(PathBuf, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((path.to_path_buf(), text))
}

/// An environment value read as the kind of value the field's default is: strings as they
/// are, numbers and booleans parsed, lists and tables as TOML (`[{name = "ci", ...}]`).
fn env_value(default: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    match default {
        toml::Value::String(_) => Ok(toml::Value::String(raw.to_string())),
        toml::Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("expected a whole number, got `{raw}`")),
        toml::Value::Boolean(_) => match raw.trim() {
            "true" | "1" | "yes" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("expected true or false, got `{raw}`")),
        },
        _ => {
            let table: toml::Table = format!("value = {raw}")
                .parse()
                .map_err(|e: toml::de::Error| format!("expected a TOML value: {e}"))?;
            table
                .get("value")
                .cloned()
                .ok_or_else(|| "expected a TOML value".to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_backends::BackendKind;
    use runnel_server::ApiKeyConfig;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_then_file_then_environment() {
        let file = "bind = \"127.0.0.1:9000\"\nmax_body_bytes = 2048\ndefault_partitions = 8\n";
        let config = RunnelConfig::layered(
            Some((Path::new("runnel.toml"), file)),
            env(&[
                ("RUNNEL_MAX_BODY_BYTES", "4096"),
                ("RUNNEL_LOG", "debug"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(config.server.bind, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(
            config.server.max_body_bytes, 4096,
            "environment beats the file"
        );
        assert_eq!(
            config.server.default_partitions, 8,
            "file beats the default"
        );
        assert_eq!(config.server.max_pull_wait_ms, 30_000, "default kept");
    }

    #[test]
    fn api_keys_come_from_the_file_or_the_environment() {
        let file = "[[api_keys]]\nname = \"ci\"\nkey = \"0123456789abcdef\"\nscopes = [\"publish:order*\", \"admin\"]\n";
        let config =
            RunnelConfig::layered(Some((Path::new("runnel.toml"), file)), env(&[])).unwrap();
        assert_eq!(config.server.api_keys.len(), 1);
        assert_eq!(config.server.api_keys[0].scopes.len(), 2);
        let config = RunnelConfig::layered(
            None,
            env(&[(
                "RUNNEL_API_KEYS",
                "[{name = \"x\", key = \"fedcba9876543210\", scopes = [\"consume:*\"]}]",
            )]),
        )
        .unwrap();
        assert_eq!(config.server.api_keys[0].name, "x");
    }

    #[test]
    fn bad_values_name_their_source() {
        let err = RunnelConfig::layered(Some((Path::new("runnel.toml"), "bind = 12\n")), env(&[]))
            .unwrap_err();
        assert!(matches!(err, ConfigError::File { .. }), "{err}");
        let err = RunnelConfig::layered(
            Some((Path::new("runnel.toml"), "no_such_field = 1\n")),
            env(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("no_such_field"), "{err}");
        let err =
            RunnelConfig::layered(None, env(&[("RUNNEL_MAX_BODY_BYTES", "lots")])).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Env { var, .. } if var == "RUNNEL_MAX_BODY_BYTES"),
            "{err}"
        );
        let err = RunnelConfig::layered(
            None,
            env(&[(
                "RUNNEL_API_KEYS",
                "[{name = \"x\", key = \"fedcba9876543210\", scopes = [\"root\"]}]",
            )]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("root"), "{err}");
    }

    #[test]
    fn the_jetstream_backend_is_chosen_and_checked_from_file_or_environment() {
        let file =
            "backend = \"jetstream\"\nnats_url = \"nats://10.0.0.1:4222\"\nnats_replicas = 3\n";
        let config = RunnelConfig::layered(
            Some((Path::new("runnel.toml"), file)),
            env(&[
                ("RUNNEL_NATS_NAMESPACE", "prod"),
                ("RUNNEL_NATS_USER", "runnel"),
                ("RUNNEL_NATS_PASSWORD", "s3cret-password"),
            ]),
        )
        .unwrap();
        assert_eq!(config.storage.backend, BackendKind::Jetstream);
        assert_eq!(config.storage.nats_url, "nats://10.0.0.1:4222");
        assert_eq!(
            (
                config.storage.nats_replicas,
                config.storage.nats_namespace.as_str()
            ),
            (3, "prod")
        );
        config.validate().unwrap();
        let shown = config.redacted().to_toml();
        assert!(!shown.contains("s3cret-password"), "{shown}");
        assert!(shown.contains("nats_user = \"runnel\""), "{shown}");

        let bad = |storage: BackendSettings, expected: &str| {
            let config = RunnelConfig {
                storage,
                ..config.clone()
            };
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        };
        bad(
            BackendSettings {
                nats_replicas: 7,
                ..config.storage.clone()
            },
            "nats_replicas",
        );
        bad(
            BackendSettings {
                nats_token: "tok".into(),
                ..config.storage.clone()
            },
            "one of",
        );
        bad(
            BackendSettings {
                nats_user: String::new(),
                ..config.storage.clone()
            },
            "nats_password needs nats_user",
        );
        bad(
            BackendSettings {
                nats_url: "http://127.0.0.1:4222".into(),
                ..config.storage.clone()
            },
            "nats://",
        );
        bad(
            BackendSettings {
                nats_namespace: "a_b".into(),
                ..config.storage.clone()
            },
            "nats_namespace",
        );
        let err = RunnelConfig::layered(None, env(&[("RUNNEL_BACKEND", "kafka")])).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Env { var, .. } if var == "RUNNEL_BACKEND"),
            "{err}"
        );
    }

    /// A non-loopback bind with an API key, as `runnel.toml` lines.
    const KEYED_BEYOND_LOOPBACK: &str = "bind = \"0.0.0.0:8443\"\n\
        api_keys = [{name = \"ci\", key = \"0123456789abcdef\", scopes = [\"admin\"]}]\n";

    #[test]
    fn tls_settings_come_from_file_or_environment_and_show() {
        let file = format!("{KEYED_BEYOND_LOOPBACK}tls_cert = \"/etc/runnel/cert.pem\"\n");
        let file = Some((Path::new("runnel.toml"), file.as_str()));
        let err = RunnelConfig::layered(file, env(&[]))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("tls_key is not"), "{err}");
        let config = RunnelConfig::layered(
            file,
            env(&[
                ("RUNNEL_TLS_KEY", "/etc/runnel/key.pem"),
                ("RUNNEL_TLS_RELOAD_SECS", "0"),
            ]),
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.server.tls_key, PathBuf::from("/etc/runnel/key.pem"));
        assert_eq!(config.server.tls_reload_secs, 0);
        let shown = config.redacted().to_toml();
        for line in [
            "tls_cert = \"/etc/runnel/cert.pem\"",
            "tls_key = \"/etc/runnel/key.pem\"",
            "tls_reload_secs = 0",
            "allow_plaintext = false",
        ] {
            assert!(shown.contains(line), "{line} in {shown}");
        }
    }

    #[test]
    fn plain_http_beyond_loopback_with_keys_needs_allow_plaintext() {
        let file = Some((Path::new("runnel.toml"), KEYED_BEYOND_LOOPBACK));
        let err = RunnelConfig::layered(file, env(&[]))
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        for named in ["tls_cert", "tls_key", "allow_plaintext"] {
            assert!(err.contains(named), "{err}");
        }
        let on_purpose =
            RunnelConfig::layered(file, env(&[("RUNNEL_ALLOW_PLAINTEXT", "true")])).unwrap();
        on_purpose.validate().unwrap();
    }

    const FEATURE: &str = "[[features]]\nname = \"spend\"\ninput = \"payment.charged\"\n\
        window = { kind = \"sliding\", size = \"10m\", slide = \"1m\" }\n\
        output = \"feature.computed\"\n\
        aggregates = [{ name = \"payments\", kind = \"count\" }]\n";

    #[test]
    fn features_are_read_from_the_file_and_shown_with_their_defaults() {
        let file = format!("default_partitions = 2\n{FEATURE}");
        let config =
            RunnelConfig::layered(Some((Path::new("runnel.toml"), &file)), env(&[])).unwrap();
        config.validate().unwrap();
        assert_eq!(config.features.len(), 1);
        assert_eq!(config.features[0].name, "spend");
        let shown = config.to_toml();
        assert!(shown.contains("[[features]]"), "{shown}");
        assert!(
            shown.contains("idle_timeout = \"1m\""),
            "defaults filled: {shown}"
        );
        let back = RunnelConfig::layered(Some((Path::new("x"), &shown)), env(&[])).unwrap();
        assert_eq!(back.features, config.features, "config show round-trips");
        let none = RunnelConfig::layered(None, env(&[])).unwrap();
        assert!(!none.to_toml().contains("features"), "no tables, no key");
    }

    #[test]
    fn a_bad_feature_table_is_named_by_index_and_name_then_field() {
        let unknown = FEATURE.replace("input =", "inptu =");
        let err = RunnelConfig::layered(Some((Path::new("runnel.toml"), &unknown)), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("features[0] (spend): unknown field `inptu`"),
            "{err}"
        );
        let wrong_kind = FEATURE.replace("size = \"10m\"", "size = 10");
        let err = RunnelConfig::layered(Some((Path::new("runnel.toml"), &wrong_kind)), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("features[0] (spend)"), "{err}");
        let rule = format!(
            "{FEATURE}{}",
            FEATURE.replace("slide = \"1m\"", "slide = \"11m\"")
        );
        let err = RunnelConfig::layered(Some((Path::new("runnel.toml"), &rule)), env(&[]))
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("features[1] (spend).window.slide: must not be longer than size"),
            "{err}"
        );
        assert!(
            err.contains("features[1] (spend).name: `spend` is already the name of features[0]"),
            "{err}"
        );
        let not_tables =
            RunnelConfig::layered(Some((Path::new("runnel.toml"), "features = 3\n")), env(&[]))
                .unwrap_err()
                .to_string();
        assert!(not_tables.contains("array of tables"), "{not_tables}");
    }

    #[test]
    fn show_redacts_secrets_and_round_trips() {
        let config = RunnelConfig {
            server: ServerConfig {
                api_keys: vec![ApiKeyConfig {
                    name: "ops".into(),
                    key: "0123456789abcdef".into(),
                    scopes: vec![runnel_server::auth::Scope::Admin],
                }],
                ..ServerConfig::default()
            },
            storage: BackendSettings {
                nats_password: "s3cret-password".into(),
                ..BackendSettings::default()
            },
            features: Vec::new(),
            sagas: Vec::new(),
            models: Vec::new(),
        };
        let text = config.redacted().to_toml();
        assert!(!text.contains("0123456789abcdef"));
        assert!(!text.contains("s3cret-password"));
        let back = RunnelConfig::layered(Some((Path::new("x"), &text)), env(&[])).unwrap();
        assert_eq!(back.server.bind, config.server.bind);
    }
}
