//! Parts of an org's state that most orgs never use (jobs and their history, an app's 429
//! counters), boxed on first use: an org that only makes requests pays a pointer for each
//! instead of its whole struct (some 330 bytes an org, 3 MB at 10 000 orgs). Reading an
//! unused part reads a shared idle value; stored (serde) exactly as the part itself, so
//! snapshots do not change.
//!
//! It owns the boxing only; what a part means is its own module's business.

use std::ops::Deref;
use std::sync::LazyLock;

use super::concurrency::{EarlyEnds, PeakConcurrency};
use super::jobs::Jobs;
use crate::detect::Cause;

/// A part that is allocated on first use.
#[derive(Debug)]
pub struct Lazy<T>(Option<Box<T>>);

impl<T> Default for Lazy<T> {
    fn default() -> Self {
        Lazy(None)
    }
}

/// What a [`Lazy`] part must tell: its value while unused, and whether a value is that.
pub trait Idle: Sized + Sync + Send + 'static {
    /// The shared value of an unused part.
    fn idle() -> &'static Self;
    /// True when this value holds nothing the unused part would not (so it need not be kept).
    fn is_idle(&self) -> bool;
}

impl<T> Lazy<T> {
    /// The part, if it was ever used.
    pub fn get_mut(&mut self) -> Option<&mut T> {
        self.0.as_deref_mut()
    }

    /// The part, made with `make` on first use.
    pub fn get_or_insert_with(&mut self, make: impl FnOnce() -> T) -> &mut T {
        self.0.get_or_insert_with(|| Box::new(make()))
    }
}

impl<T: Idle> Lazy<T> {
    /// `value`, kept only if it holds something.
    pub fn new(value: T) -> Self {
        Lazy((!value.is_idle()).then(|| Box::new(value)))
    }
}

impl<T: Idle> Deref for Lazy<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.0.as_deref().unwrap_or_else(|| T::idle())
    }
}

impl<T: Idle + serde::Serialize> serde::Serialize for Lazy<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl<'de, T: Idle + serde::Deserialize<'de>> serde::Deserialize<'de> for Lazy<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Lazy::new)
    }
}

impl Idle for Jobs {
    fn idle() -> &'static Self {
        static IDLE: LazyLock<Jobs> = LazyLock::new(|| Jobs::new(1));
        &IDLE
    }

    fn is_idle(&self) -> bool {
        // An org whose jobs all ended keeps its sequence counter, so a snapshot restored
        // and taken again is the bytes it was.
        self.is_unused()
    }
}

impl Idle for PeakConcurrency {
    fn idle() -> &'static Self {
        static IDLE: LazyLock<PeakConcurrency> = LazyLock::new(PeakConcurrency::default);
        &IDLE
    }

    fn is_idle(&self) -> bool {
        self.is_empty()
    }
}

impl Idle for EarlyEnds {
    fn idle() -> &'static Self {
        static IDLE: LazyLock<EarlyEnds> = LazyLock::new(EarlyEnds::default);
        &IDLE
    }

    fn is_idle(&self) -> bool {
        self.is_empty()
    }
}

/// An app's 429s by cause (the per-app causes, [`Cause::LEGACY`] of them): most apps never
/// get one, and the counters cost 48 bytes an app (1.4 MB at 30 000 apps).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct AppCauses(pub [u64; Cause::LEGACY]);

impl Idle for AppCauses {
    fn idle() -> &'static Self {
        static IDLE: AppCauses = AppCauses([0; Cause::LEGACY]);
        &IDLE
    }

    fn is_idle(&self) -> bool {
        self.0.iter().all(|&n| n == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_causes_are_stored_as_the_counters_they_were() {
        let unused: Lazy<AppCauses> = Lazy::default();
        let bytes = postcard::to_stdvec(&unused).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&[0u64; Cause::LEGACY]).unwrap());
        let back: Lazy<AppCauses> = postcard::from_bytes(&bytes).unwrap();
        assert!(back.0.is_none());
        let mut used: Lazy<AppCauses> = Lazy::default();
        used.get_or_insert_with(AppCauses::default).0[2] = 7;
        let bytes = postcard::to_stdvec(&used).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&[0, 0, 7, 0, 0, 0u64]).unwrap());
        let back: Lazy<AppCauses> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.0.map(|c| c.0[2]), Some(7));
    }

    #[test]
    fn an_unused_part_is_stored_as_the_part_and_read_back_unallocated() {
        let unused: Lazy<Jobs> = Lazy::default();
        let bytes = postcard::to_stdvec(&unused).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&Jobs::new(10)).unwrap());
        let back: Lazy<Jobs> = postcard::from_bytes(&bytes).unwrap();
        assert!(back.0.is_none(), "nothing held, nothing allocated");

        let mut used: Lazy<Jobs> = Lazy::default();
        used.get_or_insert_with(|| Jobs::new(10)).start("j1", 0, 5);
        let bytes = postcard::to_stdvec(&used).unwrap();
        let back: Lazy<Jobs> = postcard::from_bytes(&bytes).unwrap();
        assert!(back.holds("j1"));
        assert_eq!(back.in_flight(), 1);

        // Its jobs all ended: nothing in flight, but stored and read back as it was.
        used.get_mut().unwrap().finish("j1");
        let bytes = postcard::to_stdvec(&used).unwrap();
        let back: Lazy<Jobs> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(postcard::to_stdvec(&back).unwrap(), bytes);
    }
}
