//! A store that owns whatever it runs on, so a test's Redis server or data directory lives
//! exactly as long as the store.

use std::sync::Arc;

use sessiond_core::SessionStore;
use sessiond_core::wrap::{StoreWrapper, Wrapped};

/// `store`, keeping `guard` alive until the store is dropped. Every operation is the inner
/// store's.
#[derive(Debug)]
pub struct Guarded<G: std::fmt::Debug + Send + Sync + 'static> {
    store: Arc<dyn SessionStore>,
    _guard: G,
}

impl<G: std::fmt::Debug + Send + Sync + 'static> Guarded<G> {
    /// Wraps `store` with `guard`, as a store.
    pub fn wrap(store: Arc<dyn SessionStore>, guard: G) -> Arc<dyn SessionStore> {
        Arc::new(Wrapped(Guarded {
            store,
            _guard: guard,
        }))
    }
}

impl<G: std::fmt::Debug + Send + Sync + 'static> StoreWrapper for Guarded<G> {
    fn inner(&self) -> &dyn SessionStore {
        &*self.store
    }
}
