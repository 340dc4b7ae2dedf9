//! Hash maps keyed by strings from events and rules, with a faster hasher than SipHash
//! (the same aHash Rhai itself uses).

pub type FastMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
pub type FastSet<T> = std::collections::HashSet<T, ahash::RandomState>;
