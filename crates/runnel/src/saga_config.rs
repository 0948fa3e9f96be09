//! The `[[sagas]]` tables of `runnel.toml`: checked at start with every problem named by
//! table and field (`sagas[1] (order).steps[0].timeout: …`), so a bad saga stops
//! `runnel serve` before anything runs, like the rest of the configuration.

use runnel_saga::{Saga, SagaSpec, validate_sagas};
use runnel_server::ConfigError;

/// The sagas, validated, or every problem of the first saga that has one.
pub fn validate(specs: &[SagaSpec]) -> Result<Vec<Saga>, ConfigError> {
    validate_sagas(specs).map_err(|errors| {
        let index = specs.iter().position(|s| s.name == errors.saga);
        let table = match index {
            Some(i) => format!("sagas[{i}] ({})", errors.saga),
            None => format!("sagas ({})", errors.saga),
        };
        let problems: Vec<String> = errors
            .errors
            .iter()
            .map(|e| {
                if e.field.is_empty() {
                    format!("{table}: {}", e.problem)
                } else {
                    format!("{table}.{}: {}", e.field, e.problem)
                }
            })
            .collect();
        ConfigError::Invalid(problems.join("; "))
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::RunnelConfig;

    const SAGA: &str = r#"
[[sagas]]
name = "order"
trigger = { type = "order.placed" }

[[sagas.steps]]
name = "reserve"
command = "inventory.reserve_requested"
success = "inventory.reserved"
failure = "inventory.reservation_failed"
timeout = "5s"
compensation = { command = "inventory.release_requested", success = "inventory.released" }
"#;

    fn load(text: &str) -> Result<RunnelConfig, runnel_server::ConfigError> {
        let config = RunnelConfig::layered(Some((Path::new("runnel.toml"), text)), Vec::new())?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn a_saga_table_is_read_and_validated() {
        let config = load(SAGA).expect("valid saga");
        assert_eq!(config.sagas.len(), 1);
        assert_eq!(config.sagas[0].name, "order");
        let sagas = super::validate(&config.sagas).expect("valid");
        assert_eq!(sagas[0].steps().len(), 1);
        // Shown by `config show` and read back the same.
        let again = load(&config.to_toml()).expect("round trip");
        assert_eq!(again.sagas, config.sagas);
    }

    #[test]
    fn a_bad_saga_is_refused_naming_table_and_field() {
        let bad = SAGA.replace("timeout = \"5s\"", "timeout = \"0s\"");
        let error = load(&bad).expect_err("zero timeout").to_string();
        assert!(
            error.contains("sagas[0] (order).steps[0].timeout"),
            "{error}"
        );
    }

    #[test]
    fn unknown_keys_in_a_saga_are_refused() {
        let bad = SAGA.replace("timeout = \"5s\"", "timout = \"5s\"");
        let error = load(&bad).expect_err("unknown key").to_string();
        assert!(error.contains("timout"), "{error}");
        assert!(error.contains("runnel.toml"), "{error}");
    }
}
