//! App names held once for all orgs (the tracker's interner). It owns the names only; which
//! apps an org tracks is the org's business.

use std::collections::HashSet;
use std::sync::Arc;

/// App names, each allocated once: most orgs name their apps alike (`default`, `web`,
/// `batch`), and a name per app was some 30 bytes of 10 000 orgs' 30 000 apps (0.9 MB).
#[derive(Debug, Default)]
pub(super) struct AppNames(HashSet<Arc<str>, foldhash::fast::RandomState>);

impl AppNames {
    /// The held name `name`, held from now on if it was not.
    pub(super) fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(held) = self.0.get(name) {
            return held.clone();
        }
        let held: Arc<str> = name.into();
        self.0.insert(held.clone());
        held
    }
}
