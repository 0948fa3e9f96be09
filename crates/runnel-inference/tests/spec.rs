//! `[[models]]` tables as a user writes them: the documented example parses and validates;
//! each broken rule is reported with the path of its field.

use std::time::Duration;

use runnel_inference::{ModelSpec, validate_models};

#[derive(serde::Deserialize)]
struct File {
    models: Vec<ModelSpec>,
}

const EXAMPLE: &str = r#"
[[models]]
name = "fraud"
input = "order.placed"
output = "fraud.scored"
onnx = { path = "models/fraud_rf.onnx" }
outputs = ["legit", "fraud"]
inputs = [
  { name = "amount", pointer = "/amount" },
  { name = "orders_1h", feature = "customer_1h.orders", default = 0 },
  { name = "spent_1h", feature = "customer_1h.spent", default = 0 },
  { name = "mean_1h", feature = "customer_1h.mean", default = 0 },
  { name = "merchants_1h", feature = "customer_1h.merchants", default = 0 },
]
fallback = { legit = "1 - if(amount > 1000, 0.5, 0.02)", fraud = "if(amount > 1000, 0.5, 0.02)" }
timeout = "20ms"
breaker = { open_duration = "30s", minimum_calls = 5 }
"#;

fn parse(text: &str) -> Vec<ModelSpec> {
    toml::from_str::<File>(text).expect("parses").models
}

#[test]
fn the_documented_example_parses_with_defaults_and_validates() {
    let models = parse(EXAMPLE);
    let fraud = &models[0];
    assert_eq!(
        fraud.onnx.as_ref().unwrap().output,
        "probabilities",
        "default output"
    );
    assert_eq!(fraud.timeout, Duration::from_millis(20));
    assert_eq!(
        fraud.deadline,
        Duration::from_millis(100),
        "default deadline"
    );
    assert_eq!(fraud.max_batch, 32);
    assert_eq!(fraud.breaker.open_duration, Duration::from_secs(30));
    assert_eq!(fraud.breaker.sliding_window, 20, "default window");
    if cfg!(feature = "onnx") {
        validate_models(&models).expect("valid");
    } else {
        let err = validate_models(&models).unwrap_err();
        assert_eq!(err.problems[0].0, "models[0].onnx");
    }
}

#[test]
fn every_broken_rule_names_its_field() {
    let mut models = parse(EXAMPLE);
    let mut second = models[0].clone();
    second.onnx = None;
    second.remote = None;
    second.inputs[1].feature = Some("orders".into());
    second.inputs[2].pointer = Some(runnel_stages::FieldPointer::new("/spent").unwrap());
    second.inputs[3].name = "amount".into();
    second.fallback.insert("fraud".into(), "amout * 2".into());
    second.max_wait = Duration::from_millis(500);
    second.breaker.minimum_calls = 50;
    models.push(second);
    let err = validate_models(&models).unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|(p, _)| p.as_str()).collect();
    let mut expected = vec![
        "models[1].onnx",
        "models[1].inputs[1].feature",
        "models[1].inputs[2]",
        "models[1].inputs[3].name",
        "models[1].fallback.fraud",
        "models[1].max_wait",
        "models[1].breaker.minimum_calls",
        "models[1].name",
    ];
    if cfg!(not(feature = "onnx")) {
        expected.insert(0, "models[0].onnx");
    }
    assert_eq!(paths, expected, "{err}");
    assert!(
        err.to_string()
            .contains("models[1].fallback.fraud: `amout * 2` reads `amout`"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("models[1].name: `fraud` is used by another model"),
        "{err}"
    );
}

#[test]
fn an_output_its_own_input_matches_is_refused() {
    for (input, output) in [
        ("order.placed", "order.placed"),
        ("order.*", "order.scored"),
        (">", "fraud.scored"),
    ] {
        let mut model = parse(EXAMPLE).remove(0);
        model.input = input.into();
        model.output = runnel_envelope::EventType::new(output).unwrap();
        let err = validate_models(&[model]).unwrap_err();
        let found: Vec<&(String, String)> = err
            .problems
            .iter()
            .filter(|(path, _)| path == "models[0].output")
            .collect();
        assert_eq!(found.len(), 1, "{input} → {output}: {err}");
        assert!(
            found[0].1.contains("would score its own predictions"),
            "{err}"
        );
    }
    let mut chained = parse(EXAMPLE).remove(0);
    chained.input = "order.*".into();
    let err = validate_models(&[chained]).err();
    assert!(
        err.iter()
            .flat_map(|e| &e.problems)
            .all(|(path, _)| path != "models[0].output"),
        "{err:?}"
    );
}

#[test]
fn unknown_keys_and_bad_values_are_refused_by_the_parser() {
    let err = toml::from_str::<File>(&EXAMPLE.replace("timeout = \"20ms\"", "timout = \"20ms\""))
        .err()
        .expect("an unknown key");
    assert!(err.to_string().contains("timout"), "{err}");
    let err = toml::from_str::<File>(&EXAMPLE.replace("\"20ms\"", "\"20 parsecs\""))
        .err()
        .expect("a bad duration");
    assert!(err.to_string().contains("timeout"), "{err}");
    let err = toml::from_str::<File>(&EXAMPLE.replace("fraud.scored", "FraudScored"))
        .err()
        .expect("a bad output type");
    assert!(err.to_string().contains("output"), "{err}");
}

#[test]
fn a_shadow_names_a_live_model_with_its_inputs_and_outputs_and_its_own_stream() {
    let live = parse(EXAMPLE).remove(0);
    let shadow = |edit: &dyn Fn(&mut ModelSpec)| {
        let mut shadow = live.clone();
        shadow.name = "fraud_v2".into();
        shadow.output = runnel_envelope::EventType::new("fraud_shadow.scored").unwrap();
        shadow.shadow_of = Some("fraud".into());
        edit(&mut shadow);
        shadow
    };
    let problems = |models: Vec<ModelSpec>| -> Vec<(String, String)> {
        validate_models(&models)
            .err()
            .map(|e| e.problems)
            .unwrap_or_default()
            .into_iter()
            .filter(|(path, _)| !path.ends_with("].onnx"))
            .collect()
    };
    assert_eq!(problems(vec![live.clone(), shadow(&|_| {})]), []);
    let found = problems(vec![
        live.clone(),
        shadow(&|s| {
            s.input = "order.*".into();
            s.outputs = vec!["ok".into(), "fraud".into()];
            s.output = runnel_envelope::EventType::new("fraud.shadowed").unwrap();
            s.fallback = [
                ("ok".to_string(), "1".to_string()),
                ("fraud".to_string(), "0".to_string()),
            ]
            .into();
        }),
    ]);
    let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        ["models[1].input", "models[1].outputs", "models[1].output"],
        "{found:?}"
    );
    assert!(
        found[2].1.contains("try `fraud_shadow.scored`"),
        "{found:?}"
    );
    let unknown = problems(vec![
        live.clone(),
        shadow(&|s| s.shadow_of = Some("fruad".into())),
    ]);
    assert_eq!(
        unknown,
        [(
            "models[1].shadow_of".to_string(),
            "no model is named `fruad`".to_string()
        )]
    );
    let chained = problems(vec![
        live.clone(),
        shadow(&|_| {}),
        shadow(&|s| {
            s.name = "fraud_v3".into();
            s.output = runnel_envelope::EventType::new("fraud_v3.scored").unwrap();
            s.shadow_of = Some("fraud_v2".into());
        }),
    ]);
    assert_eq!(chained.len(), 1, "{chained:?}");
    assert_eq!(chained[0].0, "models[2].shadow_of");
    assert!(chained[0].1.contains("itself a shadow"), "{chained:?}");
}
