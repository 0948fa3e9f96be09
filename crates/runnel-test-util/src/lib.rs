//! Runnel's backend conformance suite, and the helpers Runnel's tests share.
//!
//! The behaviour the runtime relies on from storage is written once, here, as tests that take
//! a [`BackendHarness`]: the embedded backend runs them, the JetStream backend runs the same
//! ones, and a new backend is done when they pass. A backend's own crate expands them with
//! [`conformance_tests!`], one `#[tokio::test]` per behaviour:
//!
//! ```text
//! runnel_test_util::conformance_tests!(my_harness());
//! ```
//!
//! Rules the suite follows, so every backend can run it:
//! - Each test gets a fresh harness (fresh, empty storage) and uses only the [`runnel_backend::Backend`]
//!   trait, [`BackendHarness::open`] (a restart over the same storage) and the harness's
//!   [`runnel_clock::ManualClock`].
//! - Time that the trait says is judged by the injected clock (key-value expiry) is moved with
//!   the manual clock, never slept through. Append timestamps are only compared with each
//!   other, since a backend may stamp them with its engine's time.
//! - Revisions are compared for equality and order only, never for exact values.
//! - Stream names, buckets and keys use only characters every engine accepts (lowercase
//!   letters, digits, `-`, `_`, `.`, `/`).

pub mod conformance;
pub mod failures;
pub mod features;
mod fixtures;
mod harness;
pub mod runtime;
pub mod sagas;
pub mod schemas;

pub use fixtures::{
    START, assert_cas_conflict, manual_clock, numbered_records, read_all, record, stream, temp_dir,
};
pub use harness::{BackendHarness, ReopeningHarness};

/// Expands to one `#[tokio::test]` per conformance test, each calling the test with a fresh
/// harness made by `$harness` (an expression evaluated once per test). The calling crate
/// needs `tokio` with the `macros`, `rt` and `time` features as a (dev-)dependency.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::__conformance_tests! { $harness;
            append_returns_dense_offsets_and_reads_them_back,
            reads_stop_at_max_records_and_max_bytes,
            appending_an_empty_batch_is_invalid,
            concurrent_appends_get_dense_disjoint_offsets,
            read_from_time_starts_at_first_record_at_or_after,
            reading_at_high_watermark_returns_nothing,
            wait_for_data_wakes_on_append_and_times_out_otherwise,
            create_stream_is_idempotent_and_refuses_a_different_partition_count,
            unknown_stream_and_partition_are_typed_errors,
            list_and_describe_report_partitions_and_watermarks,
            commit_offset_cas_rejects_stale_revision,
            committed_offsets_are_kept_per_group_stream_and_partition,
            committed_offsets_survive_restart,
            kv_put_absent_conflicts_when_present,
            kv_cas_by_revision,
            kv_ttl_expires_by_the_injected_clock,
            kv_scan_by_prefix_in_key_order_with_pagination_skips_expired,
            kv_delete_with_expectations,
            kv_revisions_keep_growing_after_delete_and_restart,
            records_and_kv_survive_restart,
            headers_keys_and_values_round_trip_byte_for_byte,
            empty_group_bucket_and_key_are_invalid,
            calls_after_close_fail_with_closed,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($harness:expr; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $test() {
                let harness = $harness;
                $crate::conformance::$test(&harness).await;
            }
        )*
    };
}

/// Expands to one `#[tokio::test]` (multi-threaded) per runtime conformance test: the
/// runtime's behaviour (publish, dedup, fan-out, key order, lag, leases, schemas) over the
/// backend the harness opens.
#[macro_export]
macro_rules! runtime_conformance_tests {
    ($harness:expr) => {
        $crate::__conformance_group! { $harness; runtime;
            four_groups_with_different_patterns_each_see_exactly_the_matching_events,
            lag_counts_events_and_age_after_partial_consumption,
            lag_counts_only_the_events_the_filter_matches,
            a_duplicate_publish_returns_the_first_position_even_after_a_restart,
            two_groups_transforming_one_input_into_one_stream_both_publish,
            two_sources_sharing_an_id_are_two_events,
            a_publish_dropped_while_appending_settles_and_a_retry_gets_its_position,
            a_batch_is_validated_whole_and_dedups_within_itself,
            a_batch_over_two_streams_is_acknowledged_in_its_own_order,
            same_key_events_run_in_order_and_different_keys_overlap,
            one_handler_slot_over_many_partitions_handles_every_event,
            two_instances_split_partitions_and_a_silent_one_loses_them_after_the_ttl,
            a_stopped_instance_hands_its_partitions_over_with_its_progress,
            an_event_not_acknowledged_within_ack_wait_is_delivered_again,
            ack_wait_runs_from_the_pull_not_while_a_delivery_waits_to_be_pulled,
            a_group_starting_at_latest_gets_what_was_published_after_it_was_created,
            deliveries_queued_for_a_partition_that_moved_are_not_handed_out,
            a_clean_stop_counts_no_crash_against_unsettled_deliveries,
            the_trace_index_answers_a_workflow_across_streams_in_causal_order,
            a_relay_keeps_the_attempts_it_handed_out_and_no_others,
        }
        $crate::__conformance_group! { $harness; schemas;
            a_publish_is_validated_and_rejected_with_every_failing_path,
            a_type_without_a_schema_is_refused_when_schemas_are_required,
            an_event_failing_its_schema_at_consume_is_dead_lettered_as_schema_invalid,
            groups_pinned_to_a_version_receive_events_upcast_and_downcast,
            an_event_that_adapted_does_not_match_the_pinned_version_is_dead_lettered,
            a_pinned_group_gets_events_from_before_any_schema_adapted_or_dead_lettered,
        }
    };
}

/// One multi-threaded `#[tokio::test]` per named test of a module of this crate.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_group {
    ($harness:expr; $module:ident; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let harness = $harness;
                $crate::$module::$test(&harness).await;
            }
        )*
    };
}

/// Expands to one `#[tokio::test]` (multi-threaded) per failure-handling conformance test.
#[macro_export]
macro_rules! failure_conformance_tests {
    ($harness:expr) => {
        $crate::__conformance_group! { $harness; failures;
            service_failures_back_off_1_2_4_8_seconds_with_jitter_and_the_fifth_dead_letters,
            permanent_dead_letters_at_once_and_transient_then_success_acks,
            an_event_of_800_kib_is_dead_lettered_whole,
            a_key_waiting_for_a_retry_holds_its_later_events_and_other_keys_flow,
            without_ordering_later_events_of_a_waiting_key_pass,
            a_restart_in_the_middle_of_a_backoff_keeps_the_schedule_and_the_count,
            a_panicking_handler_is_a_service_failure_and_the_consumer_keeps_going,
            undecodable_records_are_quarantined_with_their_original_bytes,
            dlq_replay_reaches_this_group_only_and_the_entry_leaves_on_success,
            dlq_list_filters_paginates_and_purge_removes_only_what_matches,
            a_failure_storm_ends_with_every_event_acked_or_dead_lettered,
        }
    };
}

/// Expands to one `#[tokio::test]` (multi-threaded) per feature-pipeline conformance test:
/// `runnel-stages`' pipeline over the runtime's groups and the backend the harness opens.
#[macro_export]
macro_rules! features_conformance_tests {
    ($harness:expr) => {
        $crate::__conformance_group! { $harness; features;
            a_pipeline_publishes_what_the_pure_operator_computes_and_serves_the_latest_window,
            a_late_event_revises_its_window_and_a_too_late_one_goes_to_the_late_stream,
            an_idle_partition_does_not_hold_back_the_watermark,
            an_event_without_a_key_is_dead_lettered_naming_the_field,
            a_crash_in_the_middle_and_a_restart_give_the_results_of_an_uninterrupted_run,
            two_instances_share_the_partitions_and_one_stopping_hands_its_windows_over,
            the_store_never_replaces_a_newer_window_with_an_older_one,
        }
    };
}

/// Expands to one `#[tokio::test]` (multi-threaded) per saga conformance test:
/// `runnel-saga`'s driver over the runtime's groups and the backend the harness opens.
#[macro_export]
macro_rules! saga_conformance_tests {
    ($harness:expr) => {
        $crate::__conformance_group! { $harness; sagas;
            three_step_sagas_complete_and_each_command_runs_once,
            a_failure_at_each_step_compensates_what_was_done_in_reverse,
            a_step_that_never_replies_times_out_and_is_compensated,
            a_compensation_that_keeps_failing_is_stuck_until_an_operator_retries,
            a_conditional_step_branches_on_the_order,
            a_parallel_group_undoes_the_members_that_succeeded,
            two_drivers_share_instances_and_one_stopping_hands_its_instances_over,
            an_instance_written_but_not_published_before_a_crash_is_finished_by_the_next_driver,
        }
    };
}
