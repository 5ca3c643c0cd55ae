//! What one bucket of a window counts in: `u32` requests, `u64` tokens.

/// A bucket counter slot: `u32` for requests, `u64` for tokens.
pub trait Slot: Copy + Default + Send + Sync + 'static {
    /// The largest count one bucket holds.
    const MAX: u64;
    /// The value as `u64`.
    fn get(self) -> u64;
    /// Adds `n`, saturating; returns what was actually added so totals stay exact.
    fn add_saturating(&mut self, n: u64) -> u64;
}

impl Slot for u32 {
    const MAX: u64 = u32::MAX as u64;
    fn get(self) -> u64 {
        self as u64
    }
    fn add_saturating(&mut self, n: u64) -> u64 {
        let added = n.min((u32::MAX - *self) as u64);
        *self += added as u32;
        added
    }
}

impl Slot for u64 {
    const MAX: u64 = u64::MAX;
    fn get(self) -> u64 {
        self
    }
    fn add_saturating(&mut self, n: u64) -> u64 {
        let added = n.min(u64::MAX - *self);
        *self += added;
        added
    }
}
