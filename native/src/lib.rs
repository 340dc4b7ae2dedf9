//! Sentinel Lab's detection-rule engine: sandboxed Rhai rules over JSON security events,
//! exposed to Python as `sentinel_rhai` (see `python.rs`).

pub mod context;
pub mod engine;
pub mod events;
pub mod hashing;
pub mod limits;
pub mod matchers;
pub mod projection;
pub mod script_api;
pub mod windows;

#[cfg(feature = "python")]
mod python;

#[cfg(feature = "python")]
use pyo3::prelude::*;

#[cfg(feature = "python")]
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    python::register(m)
}
