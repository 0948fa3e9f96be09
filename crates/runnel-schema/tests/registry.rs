//! The registry over the embedded backend: versions, ids, compatibility, deletes,
//! configuration, validation, adaptation, typed events, concurrency and restarts.

mod common;

use std::sync::Arc;

use common::{fixture, fixture_with, order_amount_integer, order_v1, order_v2, subject, text};
use runnel_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
use runnel_envelope::JsonData;
use runnel_schema::{
    CompatibilityMode, RegistryConfig, RegistryError, SchemaEvent, SchemaId, SchemaRegistry,
    ValidationError, VersionRef,
};
use serde_json::json;

#[tokio::test]
async fn register_assigns_version_one_then_two_with_global_ids() {
    let f = fixture().await;
    let s = subject("order.placed");
    let v1 = f.registry.register(&s, &text(&order_v1())).await.unwrap();
    let v2 = f.registry.register(&s, &text(&order_v2())).await.unwrap();
    assert_eq!((v1.id, v1.version), (SchemaId(1), 1));
    assert_eq!((v2.id, v2.version), (SchemaId(2), 2));
    assert_eq!(f.registry.versions(&s).await.unwrap(), [1, 2]);
    assert_eq!(
        f.registry.subjects().await.unwrap(),
        std::slice::from_ref(&s)
    );
    let latest = f.registry.get(&s, VersionRef::Latest).await.unwrap();
    assert_eq!((latest.version, latest.id), (2, SchemaId(2)));
    assert_eq!(latest.schema.value(), &order_v2());
    let first = f.registry.get(&s, VersionRef::Number(1)).await.unwrap();
    assert_eq!(first.schema.value(), &order_v1());
}

#[tokio::test]
async fn registering_the_same_schema_again_returns_the_existing_version() {
    let f = fixture().await;
    let s = subject("order.placed");
    let first = f.registry.register(&s, &text(&order_v1())).await.unwrap();
    // Same schema, other key order and whitespace.
    let pretty = serde_json::to_string_pretty(&order_v1()).unwrap();
    let again = f.registry.register(&s, &pretty).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(f.registry.versions(&s).await.unwrap(), [1]);
}

#[tokio::test]
async fn the_same_schema_under_two_subjects_has_one_id() {
    let f = fixture().await;
    let a = f
        .registry
        .register(&subject("order.placed"), &text(&order_v1()))
        .await
        .unwrap();
    let b = f
        .registry
        .register(&subject("order.replayed"), &text(&order_v1()))
        .await
        .unwrap();
    assert_eq!(a.id, b.id);
    assert_eq!(b.version, 1);
    let mut holders = f.registry.subjects_for_id(a.id).await.unwrap();
    holders.sort();
    assert_eq!(
        holders,
        [(subject("order.placed"), 1), (subject("order.replayed"), 1)]
    );
    assert_eq!(f.registry.by_id(a.id).await.unwrap().value(), &order_v1());
}

#[tokio::test]
async fn an_incompatible_schema_is_refused_with_the_path_and_rule() {
    let f = fixture().await;
    let s = subject("order.placed");
    f.registry.register(&s, &text(&order_v1())).await.unwrap();
    let err = f
        .registry
        .register(&s, &text(&order_amount_integer()))
        .await
        .unwrap_err();
    match &err {
        RegistryError::Incompatible {
            mode: CompatibilityMode::Backward,
            reasons,
            ..
        } => assert_eq!(
            reasons,
            &["/properties/amount: type narrowed from number to integer"]
        ),
        other => panic!("expected Incompatible, got {other:?}"),
    }
    assert_eq!(err.error_code(), 409);
    assert_eq!(f.registry.versions(&s).await.unwrap(), [1]);
}

#[tokio::test]
async fn subject_config_overrides_global_which_overrides_the_default() {
    let f = fixture().await;
    let s = subject("order.placed");
    assert_eq!(
        f.registry.config(Some(&s)).await.unwrap(),
        CompatibilityMode::Backward
    );
    f.registry
        .set_config(None, CompatibilityMode::Full)
        .await
        .unwrap();
    assert_eq!(
        f.registry.config(Some(&s)).await.unwrap(),
        CompatibilityMode::Full
    );
    assert_eq!(f.registry.subject_config(&s).await.unwrap(), None);
    f.registry
        .set_config(Some(&s), CompatibilityMode::None)
        .await
        .unwrap();
    assert_eq!(
        f.registry.config(Some(&s)).await.unwrap(),
        CompatibilityMode::None
    );

    // NONE lets the breaking change in.
    f.registry.register(&s, &text(&order_v1())).await.unwrap();
    let broke = f
        .registry
        .register(&s, &text(&order_amount_integer()))
        .await
        .unwrap();
    assert_eq!(broke.version, 2);

    assert_eq!(
        f.registry.delete_config(Some(&s)).await.unwrap(),
        Some(CompatibilityMode::None)
    );
    assert_eq!(
        f.registry.config(Some(&s)).await.unwrap(),
        CompatibilityMode::Full
    );
    assert_eq!(
        f.registry.delete_config(None).await.unwrap(),
        Some(CompatibilityMode::Full)
    );
    assert_eq!(
        f.registry.config(None).await.unwrap(),
        CompatibilityMode::Backward
    );
}

#[tokio::test]
async fn compatibility_can_be_checked_without_registering() {
    let f = fixture().await;
    let s = subject("order.placed");
    f.registry.register(&s, &text(&order_v1())).await.unwrap();
    let good = f
        .registry
        .check_compatibility(&s, VersionRef::Latest, &text(&order_v2()))
        .await
        .unwrap();
    assert!(good.compatible, "{good:?}");
    let bad = f
        .registry
        .check_compatibility_all(&s, &text(&order_amount_integer()))
        .await
        .unwrap();
    assert!(!bad.compatible);
    assert_eq!(
        bad.reasons,
        ["/properties/amount: type narrowed from number to integer"]
    );
    let fresh = f
        .registry
        .check_compatibility_all(&subject("order.cancelled"), &text(&order_v1()))
        .await
        .unwrap();
    assert!(fresh.compatible);
    assert_eq!(f.registry.versions(&s).await.unwrap(), [1]);
}

#[tokio::test]
async fn lookup_finds_the_version_holding_a_schema() {
    let f = fixture().await;
    let s = subject("order.placed");
    f.registry.register(&s, &text(&order_v1())).await.unwrap();
    f.registry.register(&s, &text(&order_v2())).await.unwrap();
    let found = f.registry.lookup(&s, &text(&order_v1())).await.unwrap();
    assert_eq!(found.version, 1);
    let err = f
        .registry
        .lookup(&s, &text(&order_amount_integer()))
        .await
        .unwrap_err();
    assert_eq!(err.error_code(), 40403);
    let err = f
        .registry
        .lookup(&subject("order.unknown"), &text(&order_v1()))
        .await
        .unwrap_err();
    assert_eq!(err.error_code(), 40401);
}

#[tokio::test]
async fn soft_delete_hides_a_version_and_permanent_delete_never_frees_its_number() {
    let f = fixture().await;
    let s = subject("order.placed");
    f.registry.register(&s, &text(&order_v1())).await.unwrap();
    f.registry.register(&s, &text(&order_v2())).await.unwrap();

    let err = f
        .registry
        .delete_version(&s, VersionRef::Number(2), true)
        .await
        .unwrap_err();
    assert_eq!(
        err.error_code(),
        40407,
        "permanent needs a soft delete first"
    );

    assert_eq!(
        f.registry
            .delete_version(&s, VersionRef::Latest, false)
            .await
            .unwrap(),
        2
    );
    assert_eq!(f.registry.versions(&s).await.unwrap(), [1]);
    assert_eq!(
        f.registry.versions_including_deleted(&s).await.unwrap(),
        [1, 2]
    );
    let err = f.registry.get(&s, VersionRef::Number(2)).await.unwrap_err();
    assert_eq!(err.error_code(), 40402);
    assert!(
        f.registry
            .get_including_deleted(&s, VersionRef::Number(2))
            .await
            .unwrap()
            .deleted
    );
    let err = f
        .registry
        .delete_version(&s, VersionRef::Number(2), false)
        .await
        .unwrap_err();
    assert_eq!(err.error_code(), 40406);

    // Events written with the soft-deleted version still validate against it.
    let v2_event = json!({"order_id": "o-1", "amount": 3, "currency": "USD"});
    assert_eq!(
        f.registry.validate(&s, Some(2), &v2_event).await.unwrap(),
        Some(2)
    );

    f.registry
        .delete_version(&s, VersionRef::Number(2), true)
        .await
        .unwrap();
    assert_eq!(
        f.registry.versions_including_deleted(&s).await.unwrap(),
        [1]
    );
    // The id survives; the number 2 is not given again.
    assert!(f.registry.by_id(SchemaId(2)).await.is_ok());
    let again = f.registry.register(&s, &text(&order_v2())).await.unwrap();
    assert_eq!((again.id, again.version), (SchemaId(2), 3));
}

#[tokio::test]
async fn deleting_a_subject_soft_then_permanently() {
    let f = fixture().await;
    let s = subject("order.placed");
    f.registry.register(&s, &text(&order_v1())).await.unwrap();
    f.registry.register(&s, &text(&order_v2())).await.unwrap();
    f.registry
        .set_config(Some(&s), CompatibilityMode::Full)
        .await
        .unwrap();
    assert_eq!(
        f.registry
            .delete_subject(&s, true)
            .await
            .unwrap_err()
            .error_code(),
        40405
    );
    assert_eq!(f.registry.delete_subject(&s, false).await.unwrap(), [1, 2]);
    assert!(f.registry.subjects().await.unwrap().is_empty());
    assert_eq!(
        f.registry.subjects_including_deleted().await.unwrap(),
        std::slice::from_ref(&s)
    );
    assert_eq!(
        f.registry.versions(&s).await.unwrap_err().error_code(),
        40401
    );
    assert_eq!(
        f.registry
            .delete_subject(&s, false)
            .await
            .unwrap_err()
            .error_code(),
        40404
    );
    assert_eq!(f.registry.delete_subject(&s, true).await.unwrap(), [1, 2]);
    assert!(
        f.registry
            .subjects_including_deleted()
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(f.registry.subject_config(&s).await.unwrap(), None);
    assert_eq!(
        f.registry
            .delete_subject(&s, false)
            .await
            .unwrap_err()
            .error_code(),
        40401
    );
    // Re-registering starts after the old numbers.
    let again = f.registry.register(&s, &text(&order_v1())).await.unwrap();
    assert_eq!(again.version, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_get_distinct_versions_and_ids() {
    let f = fixture().await;
    let s = subject("metric.recorded");
    f.registry
        .set_config(Some(&s), CompatibilityMode::None)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let registry = f.registry.clone();
            let s = s.clone();
            tokio::spawn(async move {
                let schema =
                    json!({"type": "object", "properties": {format!("f{i}"): {"type": "string"}}});
                registry.register(&s, &schema.to_string()).await
            })
        })
        .collect();
    let mut versions = Vec::new();
    let mut ids = Vec::new();
    for task in tasks {
        let registered = task.await.unwrap().unwrap();
        versions.push(registered.version);
        ids.push(registered.id);
    }
    versions.sort_unstable();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(versions, (1..=8).collect::<Vec<u32>>());
    assert_eq!(ids.len(), 8);
    assert_eq!(f.registry.versions(&s).await.unwrap(), versions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_of_one_schema_make_one_version() {
    let f = fixture().await;
    let subjects = ["order.placed", "order.mirrored"];
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let registry = f.registry.clone();
            let s = subject(subjects[i % 2]);
            tokio::spawn(async move { registry.register(&s, &text(&order_v1())).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap().unwrap());
    }
    assert!(
        results
            .iter()
            .all(|r| r.version == 1 && r.id == results[0].id)
    );
    for s in subjects {
        assert_eq!(f.registry.versions(&subject(s)).await.unwrap(), [1]);
    }
}

#[tokio::test]
async fn the_registry_survives_a_restart() {
    let f = fixture().await;
    let s = subject("order.placed");
    f.registry.register(&s, &text(&order_v1())).await.unwrap();
    f.registry.register(&s, &text(&order_v2())).await.unwrap();
    f.registry
        .set_config(Some(&s), CompatibilityMode::FullTransitive)
        .await
        .unwrap();
    f.backend.close().await.unwrap();

    let backend = Arc::new(
        EmbeddedBackend::open(EmbeddedConfig::new(f.dir.path()))
            .await
            .unwrap(),
    );
    let registry = SchemaRegistry::new(backend, RegistryConfig::default());
    assert_eq!(registry.versions(&s).await.unwrap(), [1, 2]);
    assert_eq!(
        registry.config(Some(&s)).await.unwrap(),
        CompatibilityMode::FullTransitive
    );
    assert_eq!(
        registry
            .get(&s, VersionRef::Latest)
            .await
            .unwrap()
            .schema
            .value(),
        &order_v2()
    );
    let next = registry
        .register(
            &subject("payment.charged"),
            &text(&json!({"type": "object"})),
        )
        .await
        .unwrap();
    assert_eq!(next.id, SchemaId(3), "ids continue after a restart");
}

#[tokio::test]
async fn invalid_schemas_and_names_are_typed_errors() {
    let f = fixture().await;
    let s = subject("order.placed");
    let err = f.registry.register(&s, "{\"type\": 5}").await.unwrap_err();
    assert_eq!(err.error_code(), 42201, "{err}");
    assert!(err.to_string().contains("/type"), "{err}");
    let err = f.registry.register(&s, "not json").await.unwrap_err();
    assert_eq!(err.error_code(), 42201);
    let small = fixture_with(RegistryConfig {
        max_schema_bytes: 10,
        ..RegistryConfig::default()
    })
    .await;
    let err = small
        .registry
        .register(&s, &text(&order_v1()))
        .await
        .unwrap_err();
    assert_eq!(err.error_code(), 42209);
}

#[tokio::test]
async fn validation_lists_every_failing_path() {
    let f = fixture().await;
    let s = subject("order.placed");
    f.registry.register(&s, &text(&order_v1())).await.unwrap();
    f.registry.register(&s, &text(&order_v2())).await.unwrap();

    let valid = json!({"order_id": "o-1", "amount": 10, "currency": "EUR"});
    assert_eq!(
        f.registry.validate(&s, None, &valid).await.unwrap(),
        Some(2)
    );

    let invalid = json!({
        "order_id": 7,
        "amount": -1,
        "currency": "euro",
        "customer": {"tier": "platinum"},
        "coupon": "X"
    });
    let err = f.registry.validate(&s, None, &invalid).await.unwrap_err();
    let ValidationError::Invalid {
        version, errors, ..
    } = &err
    else {
        panic!("expected Invalid, got {err:?}");
    };
    assert_eq!(*version, 2);
    let mut paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(
        paths,
        [
            "",
            "/amount",
            "/currency",
            "/customer",
            "/customer/tier",
            "/order_id"
        ],
        "{errors:#?}"
    );

    // Pinned to version 1, the v2-only fields are not allowed.
    let err = f.registry.validate(&s, Some(1), &valid).await.unwrap_err();
    assert_eq!(err.errors().len(), 1, "{err}");
    // A version that does not exist is a registry error, not a validation failure.
    let err = f.registry.validate(&s, Some(9), &valid).await.unwrap_err();
    assert!(
        matches!(
            err,
            ValidationError::Registry(RegistryError::VersionNotFound { .. })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_subject_without_schema_is_allowed_unless_required() {
    let f = fixture().await;
    let s = subject("audit.logged");
    assert_eq!(
        f.registry
            .validate(&s, None, &json!({"any": 1}))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        f.registry.validate(&s, Some(1), &json!(1)).await.unwrap(),
        None
    );

    let strict = fixture_with(RegistryConfig {
        require_schema: true,
        ..RegistryConfig::default()
    })
    .await;
    let err = strict
        .registry
        .validate(&s, None, &json!({"any": 1}))
        .await
        .unwrap_err();
    assert!(matches!(err, ValidationError::NoSchema { .. }), "{err:?}");
}

#[tokio::test]
async fn upcast_and_downcast_between_order_placed_versions_one_and_two() {
    let f = fixture().await;
    let s = subject("order.placed");
    f.registry.register(&s, &text(&order_v1())).await.unwrap();
    f.registry.register(&s, &text(&order_v2())).await.unwrap();

    // A v1 event read by a consumer pinned to v2: the default currency is filled in.
    let v1_event = JsonData::from_value(json!({"order_id": "o-1", "amount": 12.5}));
    let upcast = f.registry.adapt(&s, 1, 2, &v1_event).await.unwrap();
    assert_eq!(
        upcast.value(),
        &json!({"order_id": "o-1", "amount": 12.5, "currency": "EUR"})
    );
    assert_eq!(
        f.registry
            .validate(&s, Some(2), upcast.value())
            .await
            .unwrap(),
        Some(2)
    );

    // A v2 event read by a consumer pinned to v1: fields v1 does not know are removed.
    let v2_event = JsonData::from_value(json!({
        "order_id": "o-2", "amount": 3, "currency": "USD",
        "customer": {"id": "c-9", "tier": "gold"}
    }));
    let downcast = f.registry.adapt(&s, 2, 1, &v2_event).await.unwrap();
    assert_eq!(downcast.value(), &json!({"order_id": "o-2", "amount": 3}));
    assert_eq!(
        f.registry
            .validate(&s, Some(1), downcast.value())
            .await
            .unwrap(),
        Some(1)
    );

    // Same version: unchanged. Unknown version: typed error.
    assert_eq!(
        f.registry.adapt(&s, 2, 2, &v2_event).await.unwrap(),
        v2_event
    );
    let err = f
        .registry
        .adapt(&s, 1, 7, &JsonData::from_value(json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ValidationError::Registry(RegistryError::VersionNotFound { .. })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn adapting_keeps_the_text_of_every_value_it_does_not_change() {
    let f = fixture().await;
    let s = subject("order.placed");
    f.registry.register(&s, &text(&order_v1())).await.unwrap();
    f.registry.register(&s, &text(&order_v2())).await.unwrap();

    // Up: an amount past f64's precision, written with an exponent, and an escaped id.
    let v1_event =
        JsonData::from_text(r#"{"order_id":"o-\u0031","amount":12345678901234567890123}"#.into())
            .unwrap();
    let upcast = f.registry.adapt(&s, 1, 2, &v1_event).await.unwrap();
    assert_eq!(
        std::str::from_utf8(upcast.text()).unwrap(),
        r#"{"order_id":"o-\u0031","amount":12345678901234567890123,"currency":"EUR"}"#
    );

    // Down: nested values left alone keep their text too.
    let v2_event = JsonData::from_text(
        r#"{"order_id":"o-2","amount":1E2,"currency":"USD","customer":{"id":"c-9","tier":"gold"}}"#
            .into(),
    )
    .unwrap();
    let downcast = f.registry.adapt(&s, 2, 1, &v2_event).await.unwrap();
    assert_eq!(
        std::str::from_utf8(downcast.text()).unwrap(),
        r#"{"order_id":"o-2","amount":1E2}"#
    );

    // Nothing to change: the very same text.
    let exact = JsonData::from_text(
        r#"{ "order_id": "o-3", "amount": 0.10000000000000000001, "currency": "EUR" }"#.into(),
    )
    .unwrap();
    let same = f.registry.adapt(&s, 1, 2, &exact).await.unwrap();
    assert_eq!(same.text(), exact.text());
}

mod typed {
    use super::*;

    pub mod v1 {
        #[derive(serde::Serialize, schemars::JsonSchema)]
        pub struct PaymentCharged {
            pub payment_id: String,
            pub amount_cents: u64,
        }
    }

    pub mod v2 {
        #[derive(serde::Serialize, schemars::JsonSchema)]
        pub struct PaymentCharged {
            pub payment_id: String,
            pub amount_cents: u64,
            /// New in version 2.
            pub card_brand: Option<String>,
        }
    }

    impl SchemaEvent for v1::PaymentCharged {
        const EVENT_TYPE: &'static str = "payment.charged";
    }

    impl SchemaEvent for v2::PaymentCharged {
        const EVENT_TYPE: &'static str = "payment.charged";
        const SCHEMA_VERSION: u32 = 2;
    }

    /// Claims version 1 but has the v2 shape.
    #[derive(serde::Serialize, schemars::JsonSchema)]
    pub struct Mislabelled {
        pub payment_id: String,
        pub amount_cents: u64,
        pub card_brand: Option<String>,
    }

    impl SchemaEvent for Mislabelled {
        const EVENT_TYPE: &'static str = "payment.charged";
    }
}

#[tokio::test]
async fn typed_events_register_their_generated_schema_and_evolve() {
    let f = fixture().await;
    let s = subject("payment.charged");
    let one = f
        .registry
        .register_type::<typed::v1::PaymentCharged>()
        .await
        .unwrap();
    assert_eq!(one.version, 1);
    // Registering again is idempotent.
    assert_eq!(
        f.registry
            .register_type::<typed::v1::PaymentCharged>()
            .await
            .unwrap(),
        one
    );
    // The generated schema is closed, so adding an `Option` field passes even FULL.
    f.registry
        .set_config(Some(&s), CompatibilityMode::FullTransitive)
        .await
        .unwrap();
    let err = f
        .registry
        .register_type::<typed::Mislabelled>()
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::TypeVersionMismatch { declared: 1, .. }),
        "{err:?}"
    );
    assert_eq!(
        f.registry.versions(&s).await.unwrap(),
        [1],
        "nothing written"
    );
    let two = f
        .registry
        .register_type::<typed::v2::PaymentCharged>()
        .await
        .unwrap();
    assert_eq!(two.version, 2);

    let event = typed::v2::PaymentCharged {
        payment_id: "p-1".into(),
        amount_cents: 1999,
        card_brand: Some("visa".into()),
    };
    let data = JsonData::from_value(serde_json::to_value(&event).unwrap());
    assert_eq!(
        f.registry
            .validate(&s, Some(2), data.value())
            .await
            .unwrap(),
        Some(2)
    );
    let for_v1 = f.registry.adapt(&s, 2, 1, &data).await.unwrap();
    assert_eq!(
        for_v1.value(),
        &json!({"payment_id": "p-1", "amount_cents": 1999})
    );
}

#[tokio::test]
async fn a_default_that_breaks_its_own_schema_is_refused_naming_its_path() {
    let f = fixture().await;
    let s = subject("order.placed");
    f.registry.register(&s, &text(&order_v1())).await.unwrap();

    // An added property whose default is not a string: consumers pinned to this version
    // would fill 5 into every older event and then fail it.
    let mut note_as_number = order_v1();
    note_as_number["properties"]["note"] = json!({"type": "string", "default": 5});
    let err = f
        .registry
        .register(&s, &text(&note_as_number))
        .await
        .unwrap_err();
    assert_eq!(err.error_code(), 42201, "{err}");
    assert!(
        err.to_string().contains("/properties/note/default"),
        "{err}"
    );

    // Inside `$defs`, reached through a `$ref`, and whatever the mode.
    f.registry
        .set_config(Some(&s), CompatibilityMode::None)
        .await
        .unwrap();
    let mut platinum = order_v2();
    platinum["$defs"]["customer"]["properties"]["tier"]["default"] = json!("platinum");
    let err = f.registry.register(&s, &text(&platinum)).await.unwrap_err();
    assert_eq!(err.error_code(), 42201, "{err}");
    assert!(
        err.to_string()
            .contains("/$defs/customer/properties/tier/default"),
        "{err}"
    );
    assert_eq!(
        f.registry.versions(&s).await.unwrap(),
        [1],
        "nothing written"
    );
}
#[tokio::test]
async fn a_closed_schema_with_min_properties_evolves_like_any_other() {
    let f = fixture().await;
    let s = subject("order.placed");
    let mut v1 = order_v1();
    v1["minProperties"] = json!(2);
    f.registry.register(&s, &text(&v1)).await.unwrap();
    // An optional property added elsewhere: minProperties did not change.
    let mut v2 = v1.clone();
    v2["properties"]["note"] = json!({"type": "string"});
    let registered = f.registry.register(&s, &text(&v2)).await.unwrap();
    assert_eq!(registered.version, 2);
}

#[tokio::test]
async fn after_a_soft_delete_data_naming_no_version_is_refused_until_a_schema_is_registered_again()
{
    let f = fixture().await;
    let s = subject("order.placed");
    let good = json!({"order_id": "o-1", "amount": 1});
    f.registry.register(&s, &text(&order_v1())).await.unwrap();
    f.registry.delete_subject(&s, false).await.unwrap();

    // Not "no schema": the subject still exists, with its versions soft deleted.
    let err = f.registry.validate(&s, None, &good).await.unwrap_err();
    assert!(
        matches!(&err, ValidationError::SubjectDeleted { subject } if subject == "order.placed"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("register its schema again"),
        "{err}"
    );
    assert!(matches!(
        f.registry.latest_for_validation(&s).await,
        Err(ValidationError::SubjectDeleted { .. })
    ));
    // Events written with a soft-deleted version still validate against it.
    assert_eq!(
        f.registry.validate(&s, Some(1), &good).await.unwrap(),
        Some(1)
    );

    // Registering again makes a new latest version.
    let again = f.registry.register(&s, &text(&order_v1())).await.unwrap();
    assert_eq!(again.version, 2);
    assert_eq!(f.registry.validate(&s, None, &good).await.unwrap(), Some(2));

    // Deleted permanently, the subject is as if it never had a schema.
    f.registry.delete_subject(&s, false).await.unwrap();
    f.registry.delete_subject(&s, true).await.unwrap();
    assert_eq!(f.registry.validate(&s, None, &good).await.unwrap(), None);
}
