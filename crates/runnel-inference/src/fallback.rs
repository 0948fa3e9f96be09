//! The fallback rule: the ladder's last step, answering when neither the model nor the cache
//! can. One small expression per output over the model's inputs by name (`evalexpr`: numbers,
//! arithmetic, comparisons, `if(cond, a, b)`, `min`, `max`), or a constant. It runs in
//! microseconds and cannot fail on numbers: it is checked when the stage starts, against every
//! input set to 0, and refused then if it reads an unknown input or does not give a number.

use std::collections::BTreeMap;

use evalexpr::{
    ContextWithMutableVariables, DefaultNumericTypes, HashMapContext, Node, Value,
    build_operator_tree,
};

/// Why a fallback rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fallback.{output}: {reason}")]
pub struct FallbackError {
    /// The output whose expression is wrong.
    pub output: String,
    /// What is wrong.
    pub reason: String,
}

/// One expression per model output.
#[derive(Debug)]
pub struct FallbackRule {
    inputs: Vec<String>,
    outputs: Vec<(String, Node<DefaultNumericTypes>)>,
}

impl FallbackRule {
    /// Compiles `expressions` (output name → expression) for a model with these inputs and
    /// outputs; every output needs one, and each may read only the inputs.
    pub fn new(
        inputs: &[String],
        outputs: &[String],
        expressions: &BTreeMap<String, String>,
    ) -> Result<Self, FallbackError> {
        if let Some(extra) = expressions.keys().find(|k| !outputs.contains(k)) {
            return Err(FallbackError {
                output: extra.clone(),
                reason: format!(
                    "the model has no output `{extra}` (it has {})",
                    outputs.join(", ")
                ),
            });
        }
        let mut compiled = Vec::with_capacity(outputs.len());
        for output in outputs {
            let Some(text) = expressions.get(output) else {
                return Err(FallbackError {
                    output: output.clone(),
                    reason: "missing: every output needs a fallback (a number or an expression \
                             over the inputs)"
                        .to_string(),
                });
            };
            let fail = |reason: String| FallbackError {
                output: output.clone(),
                reason,
            };
            let node = build_operator_tree::<DefaultNumericTypes>(text)
                .map_err(|e| fail(format!("`{text}` is not an expression: {e}")))?;
            if let Some(unknown) = node
                .iter_read_variable_identifiers()
                .find(|v| !inputs.iter().any(|i| i == v))
            {
                return Err(fail(format!(
                    "`{text}` reads `{unknown}`, which is not an input (inputs: {})",
                    inputs.join(", ")
                )));
            }
            compiled.push((output.clone(), node));
        }
        let rule = Self {
            inputs: inputs.to_vec(),
            outputs: compiled,
        };
        rule.evaluate(&vec![0.0; inputs.len()])
            .map_err(|(output, reason)| FallbackError { output, reason })?;
        Ok(rule)
    }

    /// The outputs for `row` (the model's inputs in order).
    pub fn evaluate(&self, row: &[f64]) -> Result<Vec<f64>, (String, String)> {
        let mut context = HashMapContext::<DefaultNumericTypes>::new();
        for (name, value) in self.inputs.iter().zip(row) {
            context
                .set_value(name.clone(), Value::Float(*value))
                .map_err(|e| (name.clone(), e.to_string()))?;
        }
        self.outputs
            .iter()
            .map(|(output, node)| {
                node.eval_number_with_context(&context)
                    .map_err(|e| (output.clone(), format!("does not give a number: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn exprs(e: &[(&str, &str)]) -> BTreeMap<String, String> {
        e.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn constants_and_expressions_over_inputs() {
        let rule = FallbackRule::new(
            &names(&["amount", "orders"]),
            &names(&["legit", "fraud"]),
            &exprs(&[
                ("fraud", "if(amount > 1000.0, 0.5, min(0.01 * orders, 0.2))"),
                ("legit", "0.9"),
            ]),
        )
        .unwrap();
        assert_eq!(rule.evaluate(&[2000.0, 1.0]).unwrap(), [0.9, 0.5]);
        let low = rule.evaluate(&[10.0, 3.0]).unwrap();
        assert!((low[1] - 0.03).abs() < 1e-12);
    }

    #[test]
    fn refused_rules_name_the_output() {
        let inputs = names(&["amount"]);
        let outputs = names(&["fraud"]);
        let err = FallbackRule::new(&inputs, &outputs, &exprs(&[])).unwrap_err();
        assert_eq!(err.output, "fraud");
        let err =
            FallbackRule::new(&inputs, &outputs, &exprs(&[("fraud", "amout * 2")])).unwrap_err();
        assert!(err.to_string().contains("reads `amout`"), "{err}");
        let err =
            FallbackRule::new(&inputs, &outputs, &exprs(&[("fraud", "amount > 1")])).unwrap_err();
        assert!(err.to_string().contains("number"), "{err}");
        let err = FallbackRule::new(&inputs, &outputs, &exprs(&[("fraud", "1 +")])).unwrap_err();
        assert!(err.to_string().starts_with("fallback.fraud:"), "{err}");
        let err = FallbackRule::new(&inputs, &outputs, &exprs(&[("fraud", "1"), ("x", "2")]))
            .unwrap_err();
        assert_eq!(err.output, "x");
    }
}
