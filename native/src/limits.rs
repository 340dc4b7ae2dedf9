//! Per-rule resource limits: what a rule may spend on one event before it is stopped.

use std::time::Duration;

/// Every bound a rule runs under. One value per rule; rules that share the engine-level part
/// ([`EngineLimits`]) share one Rhai engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Rhai operations per rule per event (a loop iteration, a call, an operator...).
    pub max_operations: u64,
    /// Nesting of script function calls (stops runaway recursion).
    pub max_call_levels: usize,
    /// Longest string a script may build, in bytes.
    pub max_string_size: usize,
    /// Largest array a script may build.
    pub max_array_size: usize,
    /// Largest object map a script may build.
    pub max_map_size: usize,
    /// Deepest expression nesting accepted at compile time (functions get half of it).
    pub max_expr_depth: usize,
    /// Alerts one rule may emit for one event.
    pub max_emits_per_event: usize,
    /// Wall-clock time one rule may take on one event, in milliseconds.
    pub deadline_ms: u64,
    /// Distinct window keys kept per rule; the oldest key is evicted beyond this.
    pub max_window_keys: usize,
    /// Records kept per window key; the oldest record is evicted beyond this.
    pub max_window_entries_per_key: usize,
    /// Longest rule source accepted, in bytes.
    pub max_source_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_operations: 100_000,
            max_call_levels: 32,
            max_string_size: 1 << 20,
            max_array_size: 10_000,
            max_map_size: 10_000,
            max_expr_depth: 64,
            max_emits_per_event: 8,
            deadline_ms: 25,
            max_window_keys: 10_000,
            max_window_entries_per_key: 1_000,
            max_source_size: 64 * 1024,
        }
    }
}

/// The part of [`Limits`] that is configured on a Rhai `Engine` itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EngineLimits {
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    pub max_expr_depth: usize,
}

impl Limits {
    /// The bounds of one rule's window state.
    pub fn window_bounds(&self) -> crate::windows::WindowBounds {
        crate::windows::WindowBounds {
            max_keys: self.max_window_keys,
            max_entries_per_key: self.max_window_entries_per_key,
        }
    }

    /// Names and values, in declaration order (for `repr` and error messages).
    pub fn fields(&self) -> [(&'static str, u64); 11] {
        let as_u64 = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        [
            ("max_operations", self.max_operations),
            ("max_call_levels", as_u64(self.max_call_levels)),
            ("max_string_size", as_u64(self.max_string_size)),
            ("max_array_size", as_u64(self.max_array_size)),
            ("max_map_size", as_u64(self.max_map_size)),
            ("max_expr_depth", as_u64(self.max_expr_depth)),
            ("max_emits_per_event", as_u64(self.max_emits_per_event)),
            ("deadline_ms", self.deadline_ms),
            ("max_window_keys", as_u64(self.max_window_keys)),
            (
                "max_window_entries_per_key",
                as_u64(self.max_window_entries_per_key),
            ),
            ("max_source_size", as_u64(self.max_source_size)),
        ]
    }

    /// Every limit must be at least 1: a zero would either disable the check in Rhai
    /// (where 0 means "unlimited") or make every rule fail.
    pub fn validate(&self) -> Result<(), String> {
        match self.fields().iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(format!("Limits.{name} must be at least 1")),
            None => Ok(()),
        }
    }

    pub fn engine_limits(&self) -> EngineLimits {
        EngineLimits {
            max_operations: self.max_operations,
            max_call_levels: self.max_call_levels,
            max_string_size: self.max_string_size,
            max_array_size: self.max_array_size,
            max_map_size: self.max_map_size,
            max_expr_depth: self.max_expr_depth,
        }
    }

    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Limits::default().validate(), Ok(()));
    }

    #[test]
    fn zero_limit_is_rejected_by_name() {
        let limits = Limits {
            max_map_size: 0,
            ..Limits::default()
        };
        assert_eq!(
            limits.validate(),
            Err("Limits.max_map_size must be at least 1".to_string())
        );
    }
}
