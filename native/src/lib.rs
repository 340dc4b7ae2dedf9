//! Sentinel Lab's detection-rule engine: sandboxed Rhai rules over JSON security events,
//! exposed to Python as `sentinel_rhai` (see `python.rs`).

pub mod context;
pub mod engine;
pub mod events;
pub mod fastjson;
pub mod fastpath;
pub mod hashing;
pub mod json;
pub mod limits;
pub mod matchers;
pub mod projection;
pub mod script_api;
pub mod windows;

/// Evaluation allocates and frees many small values (event maps, strings, Rhai's own
/// temporaries); mimalloc's thread-local free lists make that markedly cheaper than glibc.
/// Not under cargo-fuzz (`cfg(fuzzing)`), where the sanitizer must see every allocation.
#[cfg(not(fuzzing))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "python")]
mod python;

#[cfg(feature = "python")]
use pyo3::prelude::*;

#[cfg(feature = "python")]
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    python::register(m)
}
