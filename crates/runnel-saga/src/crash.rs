//! A test-only hook that aborts the process at a step boundary of the driver, for the crash
//! tests of real processes (`crates/runnel/tests/saga_serve.rs`).
//!
//! It is read from the environment once, and only does anything when
//! `RUNNEL_SAGA_CRASH_AT` is set:
//!
//! | value | where the process aborts |
//! | --- | --- |
//! | `after_write` | right after an instance's transition was written (compare-and-set done) |
//! | `before_publish` | right before the commands of a written transition are published |
//! | `after_reply` | after a reply was applied and its commands published, before the reply is acknowledged |
//!
//! `RUNNEL_SAGA_CRASH_COUNT` (default 1) says at which arrival at that boundary: the
//! process aborts the `N`th time any instance reaches it. A value the hook cannot read is
//! reported on stderr and the hook stays off (it never changes what a production server does).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// A boundary of the driver where the hook may abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Boundary {
    AfterWrite,
    BeforePublish,
    AfterReply,
}

impl Boundary {
    fn parse(value: &str) -> Option<Self> {
        match value {
            "after_write" => Some(Self::AfterWrite),
            "before_publish" => Some(Self::BeforePublish),
            "after_reply" => Some(Self::AfterReply),
            _ => None,
        }
    }
}

struct Hook {
    at: Boundary,
    count: u64,
    reached: AtomicU64,
}

fn hook() -> Option<&'static Hook> {
    static HOOK: OnceLock<Option<Hook>> = OnceLock::new();
    HOOK.get_or_init(|| {
        let at = std::env::var("RUNNEL_SAGA_CRASH_AT").ok()?;
        let Some(at) = Boundary::parse(&at) else {
            eprintln!(
                "RUNNEL_SAGA_CRASH_AT={at:?} is not after_write, before_publish or after_reply; the crash hook is off"
            );
            return None;
        };
        let count = match std::env::var("RUNNEL_SAGA_CRASH_COUNT") {
            Err(_) => 1,
            Ok(n) => match n.parse::<u64>() {
                Ok(n) if n > 0 => n,
                _ => {
                    eprintln!(
                        "RUNNEL_SAGA_CRASH_COUNT={n:?} is not a positive integer; the crash hook is off"
                    );
                    return None;
                }
            },
        };
        Some(Hook {
            at,
            count,
            reached: AtomicU64::new(0),
        })
    })
    .as_ref()
}

/// The driver reached `boundary`: aborts the process if the hook says so.
pub(crate) fn reached(boundary: Boundary) {
    let Some(hook) = hook() else {
        return;
    };
    if hook.at == boundary && hook.reached.fetch_add(1, Ordering::SeqCst) + 1 == hook.count {
        eprintln!("RUNNEL_SAGA_CRASH_AT: aborting at {boundary:?}");
        std::process::abort();
    }
}
