"""Confluent's own Python client against Runnel's schema registry.

Uses `SchemaRegistryClient` from the `confluent-kafka` package: registers JSON Schemas,
fetches them by id and by version, checks compatibility (a compatible and an incompatible
change), and changes the compatibility configuration.

The registry's base URL comes from RUNNEL_REGISTRY_URL (for the server, the URL ending in
`/registry`). `crates/runnel-schema/tests/confluent_client.rs` starts one and runs this file
when RUNNEL_PYTHON names a Python with confluent-kafka installed. Runs under pytest, or as a
plain script.
"""

import json
import os
import sys

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

URL = os.environ.get("RUNNEL_REGISTRY_URL", "http://127.0.0.1:8081")

ORDER_V1 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "order_id": {"type": "string"},
        "amount": {"type": "number", "minimum": 0},
    },
    "required": ["order_id", "amount"],
    "additionalProperties": False,
}

# Adds a required currency with a default: compatible under BACKWARD and FORWARD.
ORDER_V2 = {
    **ORDER_V1,
    "properties": {**ORDER_V1["properties"], "currency": {"type": "string", "default": "EUR"}},
    "required": ["order_id", "amount", "currency"],
}

# Narrows amount from number to integer: old data no longer reads.
ORDER_AMOUNT_INTEGER = {
    **ORDER_V1,
    "properties": {**ORDER_V1["properties"], "amount": {"type": "integer"}},
}


def client():
    """A fresh client each time, so nothing is answered from the client's cache."""
    return SchemaRegistryClient({"url": URL})


def json_schema(schema, indent=None):
    return Schema(json.dumps(schema, indent=indent), "JSON")


def expect_error(error_code, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except SchemaRegistryError as e:
        assert e.error_code == error_code, f"expected {error_code}, got {e.error_code}: {e}"
        return e
    raise AssertionError(f"expected error {error_code}, the call succeeded")


def test_register_and_fetch_by_id_and_version():
    subject = "order.placed"
    id1 = client().register_schema(subject, json_schema(ORDER_V1))
    id2 = client().register_schema(subject, json_schema(ORDER_V2))
    assert id1 != id2

    fetched = client().get_schema(id1)
    assert fetched.schema_type == "JSON"
    assert json.loads(fetched.schema_str) == ORDER_V1

    latest = client().get_latest_version(subject)
    assert (latest.version, latest.schema_id, latest.subject) == (2, id2, subject)
    assert json.loads(latest.schema.schema_str) == ORDER_V2

    first = client().get_version(subject, 1)
    assert first.schema_id == id1
    assert json.loads(first.schema.schema_str) == ORDER_V1

    assert client().get_versions(subject) == [1, 2]
    assert subject in client().get_subjects()

    found = client().lookup_schema(subject, json_schema(ORDER_V1))
    assert (found.version, found.schema_id) == (1, id1)

    # The same schema, formatted differently, is the same schema: same id, no new version.
    assert client().register_schema(subject, json_schema(ORDER_V1, indent=2)) == id1
    assert client().get_versions(subject) == [1, 2]

    # The same schema under another subject shares the id.
    assert client().register_schema("order.mirrored", json_schema(ORDER_V1)) == id1


def test_compatibility_compatible_and_incompatible():
    subject = "payment.charged"
    client().register_schema(subject, json_schema(ORDER_V1))

    assert client().test_compatibility(subject, json_schema(ORDER_V2)) is True
    assert client().test_compatibility(subject, json_schema(ORDER_AMOUNT_INTEGER)) is False
    assert client().test_compatibility(subject, json_schema(ORDER_AMOUNT_INTEGER), version=1) is False
    assert client().test_compatibility_all_versions(subject, json_schema(ORDER_V2)) is True

    error = expect_error(409, client().register_schema, subject, json_schema(ORDER_AMOUNT_INTEGER))
    assert error.http_status_code == 409
    assert "/properties/amount: type narrowed from number to integer" in error.error_message
    assert client().get_versions(subject) == [1]


def test_change_compatibility_config():
    subject = "refund.issued"
    try:
        assert client().get_compatibility() == "BACKWARD"
        client().set_compatibility(level="FULL")
        assert client().get_compatibility() == "FULL"

        expect_error(40408, client().get_compatibility, subject)
        client().set_compatibility(subject_name=subject, level="NONE")
        assert client().get_compatibility(subject) == "NONE"

        # Under NONE the breaking change is accepted.
        client().register_schema(subject, json_schema(ORDER_V1))
        client().register_schema(subject, json_schema(ORDER_AMOUNT_INTEGER))
        assert client().get_versions(subject) == [1, 2]

        expect_error(42203, client().set_compatibility, level="SIDEWAYS")
    finally:
        client().set_compatibility(level="BACKWARD")
    assert client().get_compatibility() == "BACKWARD"


def test_errors_and_deletes():
    expect_error(40401, client().get_versions, "nothing.registered")
    expect_error(40403, client().get_schema, 99999)
    expect_error(42201, client().register_schema, "order.shipped", Schema('{"type": "record"}', "AVRO"))
    expect_error(42201, client().register_schema, "order.shipped", Schema('{"type": 5}', "JSON"))

    subject = "cart.abandoned"
    client().register_schema(subject, json_schema(ORDER_V1))
    client().register_schema(subject, json_schema(ORDER_V2))
    assert client().delete_version(subject, 2) == 2
    assert client().get_versions(subject) == [1]
    assert client().delete_subject(subject) == [1]
    # Permanent deletion removes every version, including the one soft deleted earlier.
    assert client().delete_subject(subject, permanent=True) == [1, 2]
    expect_error(40401, client().get_versions, subject)


if __name__ == "__main__":
    tests = [value for name, value in sorted(globals().items()) if name.startswith("test_")]
    failed = 0
    for test in tests:
        try:
            test()
            print(f"PASSED {test.__name__}")
        except Exception as e:  # noqa: BLE001 - report every failure, then exit non-zero
            failed += 1
            print(f"FAILED {test.__name__}: {e!r}")
    print(f"{len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
