//! How the conformance suite gets a backend: a harness that opens one over its own storage,
//! again and again (a restart), with a manual clock the test moves.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use runnel_backend::{Backend, BackendError};
use runnel_clock::ManualClock;

/// A backend factory for the conformance suite. Each harness value stands for fresh, empty
/// storage that no other harness shares.
#[async_trait]
pub trait BackendHarness: Send + Sync {
    /// Opens a backend over this harness's storage, built with [`BackendHarness::clock`].
    /// Opening again is a restart: the instance opened before is closed first, and the new
    /// one sees everything the old one acknowledged. Panics if the backend cannot open.
    async fn open(&self) -> Arc<dyn Backend>;

    /// The clock every backend this harness opens is built with; advancing it moves the
    /// backend's time.
    fn clock(&self) -> ManualClock;
}

/// A [`BackendHarness`] from a function that opens a backend with a given clock: it keeps
/// the clock and the last instance, and closes that instance before opening the next.
///
/// ```text
/// let dir = runnel_test_util::temp_dir();
/// let harness = ReopeningHarness::new(move |clock| {
///     let path = dir.path().to_path_buf();
///     async move { Arc::new(open_my_backend(path, clock).await) as Arc<dyn Backend> }
/// });
/// ```
pub struct ReopeningHarness<F> {
    open: F,
    clock: ManualClock,
    current: tokio::sync::Mutex<Option<Arc<dyn Backend>>>,
}

impl<F> ReopeningHarness<F> {
    /// A harness whose clock starts at [`crate::START`].
    pub fn new(open: F) -> Self {
        Self {
            open,
            clock: crate::manual_clock(),
            current: tokio::sync::Mutex::new(None),
        }
    }
}

#[async_trait]
impl<F, Fut> BackendHarness for ReopeningHarness<F>
where
    F: Fn(ManualClock) -> Fut + Send + Sync,
    Fut: Future<Output = Arc<dyn Backend>> + Send,
{
    async fn open(&self) -> Arc<dyn Backend> {
        let mut current = self.current.lock().await;
        if let Some(previous) = current.take() {
            match previous.close().await {
                Ok(()) | Err(BackendError::Closed) => {}
                Err(error) => panic!("closing the previous {} backend: {error}", previous.kind()),
            }
        }
        let backend = (self.open)(self.clock.clone()).await;
        *current = Some(backend.clone());
        backend
    }

    fn clock(&self) -> ManualClock {
        self.clock.clone()
    }
}
