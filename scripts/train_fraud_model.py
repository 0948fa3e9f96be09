#!/usr/bin/env python3
"""Trains the fraud model that ships with Runnel, on synthetic data made here with a fixed seed.

Each row is what an inference stage over `order.placed` can assemble for one order: the order's
amount (from the event) and the customer's features over the last hour (from the online
feature store: order count, sum, mean, distinct merchants). The label says whether the order
was fraud, drawn from a hidden rule plus noise.

Writes, into the output directory (default `models/`):
- `fraud_lr.onnx`: a scikit-learn logistic regression (its coefficients in standard ONNX
  operators: tract has no `LinearClassifier`);
- `fraud_rf.onnx`: a 20-tree random forest (depth at most 6, to stay small);
- `fraud_testset.csv`: 200 held-out rows, their label, and scikit-learn's probability of fraud
  under each model (the Rust tests compare tract's answers with these to 1e-5);
- `fraud_model.json`: the input order, the ONNX input and output names, versions.

Every value is on a coarse grid (amounts in cents, counts whole) and exactly representable
as float32 near it, so the ONNX models (float32) and scikit-learn (float64 on the same values)
take the same branch at every tree threshold.

`--joblib DIR` instead trains the same two models and saves them as `DIR/lr/model.joblib`
and `DIR/rf/model.joblib` for MLServer's scikit-learn runtime (needs only scikit-learn and
joblib, not skl2onnx).
"""

import argparse
import csv
import json
import os
import sys

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

SEED = 20261207
TRAIN_ROWS = 6000
TEST_ROWS = 200
TREES = 20
MAX_DEPTH = 6
INPUTS = ["amount", "orders_1h", "spent_1h", "mean_1h", "merchants_1h"]


def grid32(values, step):
    """Rounds to a multiple of `step`, then to the nearest float32 (and back to float64)."""
    return (np.round(values / step) * step).astype(np.float32).astype(np.float64)


def make_data(rows, rng):
    """Synthetic orders with their customer's last-hour features and a fraud label."""
    orders = rng.poisson(2.0, rows) + 1  # this order included
    # Typical orders of 5 to 200; fraudsters pile up many, larger orders at new merchants.
    typical = rng.lognormal(mean=3.4, sigma=0.7, size=rows)
    amount = grid32(np.clip(typical * rng.lognormal(0.0, 0.35, rows), 1.0, 5000.0), 0.01)
    previous = np.array([rng.lognormal(3.4, 0.7, n - 1).sum() if n > 1 else 0.0 for n in orders])
    spent = grid32(previous + amount, 0.01)
    mean = grid32(spent / orders, 0.01)
    merchants = np.minimum(orders, rng.binomial(orders, 0.6) + 1).astype(np.float64)
    logit = (
        -6.2
        + 0.9 * np.log1p(amount / 50.0)
        + 0.45 * orders
        + 0.9 * (merchants / orders)
        + 0.6 * np.log1p(spent / 300.0)
        + rng.normal(0.0, 0.8, rows)
    )
    label = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    x = np.column_stack([amount, orders.astype(np.float64), spent, mean, merchants])
    return x, label


def train():
    rng = np.random.default_rng(SEED)
    x, y = make_data(TRAIN_ROWS + TEST_ROWS, rng)
    x_train, y_train = x[:TRAIN_ROWS], y[:TRAIN_ROWS]
    x_test, y_test = x[TRAIN_ROWS:], y[TRAIN_ROWS:]
    lr = LogisticRegression(max_iter=2000)
    lr.fit(x_train, y_train)
    rf = RandomForestClassifier(n_estimators=TREES, max_depth=MAX_DEPTH, random_state=SEED)
    rf.fit(x_train, y_train)
    return lr, rf, x_test, y_test, y_train


def write_lr_onnx(model, path):
    """The logistic regression in standard ONNX operators (MatMul, Add, Sigmoid).

    skl2onnx writes it as `ai.onnx.ml.LinearClassifier`, which tract does not implement; the
    same function in plain operators runs everywhere: p = sigmoid(x·w + b), probabilities
    `[1 - p, p]` (scikit-learn's binary `predict_proba`), label `p > 0.5`.
    """
    import onnx
    from onnx import TensorProto, helper

    weights = np.asarray(model.coef_, dtype=np.float32).reshape(len(INPUTS), 1)
    bias = np.asarray(model.intercept_, dtype=np.float32).reshape(1)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "weights"], ["dot"]),
            helper.make_node("Add", ["dot", "bias"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["p1"]),
            helper.make_node("Sub", ["one", "p1"], ["p0"]),
            helper.make_node("Concat", ["p0", "p1"], ["probabilities"], axis=1),
            helper.make_node("Greater", ["p1", "half"], ["fraud"]),
            helper.make_node("Cast", ["fraud"], ["label_column"], to=TensorProto.INT64),
            helper.make_node("Reshape", ["label_column", "flat"], ["label"]),
        ],
        "fraud_lr",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, len(INPUTS)])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2]),
        ],
        initializer=[
            helper.make_tensor("weights", TensorProto.FLOAT, weights.shape, weights.flatten()),
            helper.make_tensor("bias", TensorProto.FLOAT, [1], bias),
            helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]),
            helper.make_tensor("half", TensorProto.FLOAT, [1], [0.5]),
            helper.make_tensor("flat", TensorProto.INT64, [1], [-1]),
        ],
    )
    onnx_model = helper.make_model(
        graph,
        producer_name="runnel scripts/train_fraud_model.py",
        opset_imports=[helper.make_opsetid("", 13)],
    )
    onnx.checker.check_model(onnx_model)
    with open(path, "wb") as f:
        f.write(onnx_model.SerializeToString())


def write_onnx(model, path):
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onnx = to_onnx(
        model,
        initial_types=[("input", FloatTensorType([None, len(INPUTS)]))],
        # Plain tensors out (no ZipMap of dictionaries); the ML opset whose
        # TreeEnsembleClassifier tract reads.
        options={id(model): {"zipmap": False}},
        target_opset={"": 13, "ai.onnx.ml": 1},
    )
    with open(path, "wb") as f:
        f.write(onnx.SerializeToString())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="models", help="directory for the ONNX files and test set")
    parser.add_argument("--joblib", metavar="DIR", help="save joblib models for MLServer instead")
    args = parser.parse_args()

    lr, rf, x_test, y_test, y_train = train()

    if args.joblib:
        import joblib

        for name, model in (("lr", lr), ("rf", rf)):
            os.makedirs(os.path.join(args.joblib, name), exist_ok=True)
            joblib.dump(model, os.path.join(args.joblib, name, "model.joblib"))
        return 0

    import sklearn
    import skl2onnx

    os.makedirs(args.out, exist_ok=True)
    write_lr_onnx(lr, os.path.join(args.out, "fraud_lr.onnx"))
    write_onnx(rf, os.path.join(args.out, "fraud_rf.onnx"))
    p_lr = lr.predict_proba(x_test)[:, 1]
    p_rf = rf.predict_proba(x_test)[:, 1]
    with open(os.path.join(args.out, "fraud_testset.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(INPUTS + ["label", "p_lr", "p_rf"])
        for row, label, a, b in zip(x_test, y_test, p_lr, p_rf):
            writer.writerow([repr(float(v)) for v in row] + [int(label), repr(float(a)), repr(float(b))])
    meta = {
        "inputs": INPUTS,
        "onnx_input": "input",
        "onnx_outputs": {"label": "label", "probabilities": "probabilities"},
        "fraud_class_index": 1,
        "seed": SEED,
        "train_rows": TRAIN_ROWS,
        "test_rows": TEST_ROWS,
        "fraud_rate_train": float(np.mean(y_train)),
        "trees": TREES,
        "max_depth": MAX_DEPTH,
        "scikit_learn": sklearn.__version__,
        "skl2onnx": skl2onnx.__version__,
    }
    with open(os.path.join(args.out, "fraud_model.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
