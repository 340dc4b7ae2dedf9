//! The Python face of the engine: `RuleEngine`, `Limits`, `Rule`, `BatchResult` and the
//! exceptions. Thin wrappers: all behaviour lives in `crate::engine`.

mod convert;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::engine::{self, BatchOutcome, LoadError, RuleInfo, RuleSpec};
use crate::events::{Event, EventInput};
use crate::hashing::{FastMap, FastSet};
use crate::limits;

create_exception!(
    sentinel_rhai,
    RuleError,
    PyException,
    "Base class of every error the rule engine raises."
);
create_exception!(
    sentinel_rhai,
    RuleCompileError,
    RuleError,
    "A rule does not compile. Attributes: rule_id, line, column (None when unknown), reason."
);
create_exception!(
    sentinel_rhai,
    RuleLimitError,
    RuleError,
    "A rule exceeds a load-time limit (max_source_size). Attributes: rule_id, reason."
);

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<RuleEngine>()?;
    m.add_class::<Limits>()?;
    m.add_class::<Rule>()?;
    m.add_class::<BatchResult>()?;
    m.add_class::<Match>()?;
    m.add_class::<Failure>()?;
    m.add_class::<ParseFailure>()?;
    m.add("RuleError", py.get_type::<RuleError>())?;
    m.add("RuleCompileError", py.get_type::<RuleCompileError>())?;
    m.add("RuleLimitError", py.get_type::<RuleLimitError>())?;
    m.add(
        "CAPABILITIES",
        engine::CAPABILITIES
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>(),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

fn load_error(py: Python<'_>, err: LoadError) -> PyErr {
    let text = err.to_string();
    let (pyerr, rule_id, reason, position) = match err {
        LoadError::Compile {
            rule_id,
            message,
            line,
            column,
        } => (
            RuleCompileError::new_err(text),
            rule_id,
            message,
            Some((line, column)),
        ),
        LoadError::Limit { rule_id, message } => {
            (RuleLimitError::new_err(text), rule_id, message, None)
        }
        LoadError::Invalid { rule_id, message } => {
            (RuleError::new_err(text), rule_id, message, None)
        }
    };
    let value = pyerr.value(py);
    let attrs = (|| -> PyResult<()> {
        value.setattr("rule_id", rule_id)?;
        value.setattr("reason", reason)?;
        if let Some((line, column)) = position {
            value.setattr("line", line)?;
            value.setattr("column", column)?;
        }
        Ok(())
    })();
    match attrs {
        Ok(()) => pyerr,
        Err(e) => e,
    }
}

/// Python's own repr of a str, for `__repr__` output that reads like Python.
fn repr_str(py: Python<'_>, text: &str) -> String {
    PyString::new(py, text)
        .repr()
        .map_or_else(|_| format!("{text:?}"), |r| r.to_string())
}

fn repr_opt(value: Option<usize>) -> String {
    value.map_or_else(|| "None".to_string(), |v| v.to_string())
}

fn repr_list(py: Python<'_>, items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|i| repr_str(py, i)).collect();
    format!("[{}]", inner.join(", "))
}

fn internal_error() -> PyErr {
    RuleError::new_err("internal error in the rule engine; the batch was not evaluated")
}

/// Resource limits for rules. Every argument is optional; omitted ones keep their defaults.
#[pyclass(frozen, eq, hash, module = "sentinel_rhai", name = "Limits")]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Limits {
    inner: limits::Limits,
}

macro_rules! limit_getters {
    ($($field:ident: $ty:ty),* $(,)?) => {
        #[pymethods]
        impl Limits {
            #[new]
            #[pyo3(signature = (*, $($field = None),*))]
            // One keyword argument per limit is the Python-facing design.
            #[allow(clippy::too_many_arguments)]
            fn new($($field: Option<$ty>),*) -> PyResult<Self> {
                let mut inner = limits::Limits::default();
                $(if let Some(v) = $field { inner.$field = v; })*
                inner.validate().map_err(PyValueError::new_err)?;
                Ok(Self { inner })
            }

            $(
                #[getter]
                fn $field(&self) -> $ty {
                    self.inner.$field
                }
            )*

            fn __repr__(&self) -> String {
                let fields: Vec<String> = self
                    .inner
                    .fields()
                    .iter()
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect();
                format!("Limits({})", fields.join(", "))
            }
        }
    };
}

limit_getters!(
    max_operations: u64,
    max_call_levels: usize,
    max_string_size: usize,
    max_array_size: usize,
    max_map_size: usize,
    max_expr_depth: usize,
    max_emits_per_event: usize,
    deadline_ms: u64,
    max_window_keys: usize,
    max_window_entries_per_key: usize,
    max_source_size: usize,
);

impl Limits {
    /// A `Limits` object, or a dict of overrides applied to `base`.
    fn from_py(value: &Bound<'_, PyAny>, base: limits::Limits) -> PyResult<limits::Limits> {
        if let Ok(limits) = value.cast::<Limits>() {
            return Ok(limits.get().inner);
        }
        let Ok(dict) = value.cast::<PyDict>() else {
            return Err(PyTypeError::new_err(
                "limits must be a Limits object or a dict of Limits fields",
            ));
        };
        let mut merged = base;
        for (key, v) in dict.iter() {
            let key: String = key.extract()?;
            let as_usize = || v.extract::<usize>();
            match key.as_str() {
                "max_operations" => merged.max_operations = v.extract()?,
                "max_call_levels" => merged.max_call_levels = as_usize()?,
                "max_string_size" => merged.max_string_size = as_usize()?,
                "max_array_size" => merged.max_array_size = as_usize()?,
                "max_map_size" => merged.max_map_size = as_usize()?,
                "max_expr_depth" => merged.max_expr_depth = as_usize()?,
                "max_emits_per_event" => merged.max_emits_per_event = as_usize()?,
                "deadline_ms" => merged.deadline_ms = v.extract()?,
                "max_window_keys" => merged.max_window_keys = as_usize()?,
                "max_window_entries_per_key" => merged.max_window_entries_per_key = as_usize()?,
                "max_source_size" => merged.max_source_size = as_usize()?,
                other => {
                    return Err(PyValueError::new_err(format!(
                        "unknown limit '{other}' (see sentinel_rhai.Limits)"
                    )))
                }
            }
        }
        merged.validate().map_err(PyValueError::new_err)?;
        Ok(merged)
    }
}

/// A loaded rule, as `load()` and `rules()` report it.
#[pyclass(frozen, module = "sentinel_rhai", name = "Rule")]
pub struct Rule {
    info: RuleInfo,
}

#[pymethods]
impl Rule {
    #[getter]
    fn id(&self) -> &str {
        &self.info.id
    }

    /// SHA-256 of the source, lowercase hex.
    #[getter]
    fn hash(&self) -> &str {
        &self.info.hash
    }

    /// Event kinds the rule sees, or None for every kind.
    #[getter]
    fn kinds(&self) -> Option<Vec<String>> {
        self.info.kinds.clone()
    }

    #[getter]
    fn capabilities(&self) -> Vec<String> {
        self.info.capabilities.clone()
    }

    /// A copy of the manifest metadata given at load time.
    #[getter]
    fn meta<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        convert::map_to_py(py, &self.info.meta)
    }

    #[getter]
    fn limits(&self) -> Limits {
        Limits {
            inner: self.info.limits,
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Rule(id={}, hash={}, kinds={}, capabilities={})",
            repr_str(py, &self.info.id),
            repr_str(py, &self.info.hash),
            self.info
                .kinds
                .as_ref()
                .map_or_else(|| "None".to_string(), |k| repr_list(py, k)),
            repr_list(py, &self.info.capabilities)
        )
    }
}

/// One alert: `alert` is a dict with at least rule_id, title, severity, context, dedup.
#[pyclass(frozen, get_all, module = "sentinel_rhai", name = "Match")]
pub struct Match {
    rule_id: String,
    event_index: usize,
    alert: Py<PyDict>,
}

#[pymethods]
impl Match {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Match(rule_id={}, event_index={})",
            repr_str(py, &self.rule_id),
            self.event_index
        )
    }
}

/// A rule that stopped on an event. `kind` is "limit", "runtime", "capability" or "panic";
/// `line` and `column` point into the rule's source (None when unknown).
#[pyclass(frozen, get_all, module = "sentinel_rhai", name = "Failure")]
pub struct Failure {
    rule_id: String,
    event_index: usize,
    kind: &'static str,
    message: String,
    line: Option<usize>,
    column: Option<usize>,
}

#[pymethods]
impl Failure {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Failure(rule_id={}, event_index={}, kind={}, message={}, line={}, column={})",
            repr_str(py, &self.rule_id),
            self.event_index,
            repr_str(py, self.kind),
            repr_str(py, &self.message),
            repr_opt(self.line),
            repr_opt(self.column)
        )
    }
}

/// An input event that could not be decoded; no rule saw it.
#[pyclass(frozen, get_all, module = "sentinel_rhai", name = "ParseFailure")]
pub struct ParseFailure {
    event_index: usize,
    message: String,
}

#[pymethods]
impl ParseFailure {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "ParseFailure(event_index={}, message={})",
            self.event_index,
            repr_str(py, &self.message)
        )
    }
}

/// What one `evaluate`/`evaluate_jsonl` call produced.
#[pyclass(frozen, get_all, module = "sentinel_rhai", name = "BatchResult")]
pub struct BatchResult {
    /// Events decoded and offered to the rules.
    events: usize,
    matches: Py<PyList>,
    failures: Py<PyList>,
    parse_errors: Py<PyList>,
}

#[pymethods]
impl BatchResult {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "BatchResult(events={}, matches={}, failures={}, parse_errors={})",
            self.events,
            self.matches.bind(py).len(),
            self.failures.bind(py).len(),
            self.parse_errors.bind(py).len()
        )
    }
}

impl BatchResult {
    fn from_outcome(py: Python<'_>, outcome: BatchOutcome) -> PyResult<Self> {
        let matches = PyList::empty(py);
        for m in outcome.matches {
            let alert = convert::map_to_py(py, &m.alert)?.unbind();
            matches.append(Match {
                rule_id: m.rule_id,
                event_index: m.event_index,
                alert,
            })?;
        }
        let failures = PyList::empty(py);
        for f in outcome.failures {
            failures.append(Failure {
                rule_id: f.rule_id,
                event_index: f.event_index,
                kind: f.kind.as_str(),
                message: f.message,
                line: f.line,
                column: f.column,
            })?;
        }
        let parse_errors = PyList::empty(py);
        for p in outcome.parse_errors {
            parse_errors.append(ParseFailure {
                event_index: p.event_index,
                message: p.message,
            })?;
        }
        Ok(Self {
            events: outcome.events,
            matches: matches.unbind(),
            failures: failures.unbind(),
            parse_errors: parse_errors.unbind(),
        })
    }
}

/// A set of sandboxed Rhai rules evaluated over JSON events. Thread-safe: calls are
/// serialized, and batch evaluation releases the GIL.
#[pyclass(frozen, module = "sentinel_rhai", name = "RuleEngine")]
pub struct RuleEngine {
    inner: Mutex<engine::RuleEngine>,
    /// Fixed at construction; kept outside the mutex so argument parsing never waits on a batch.
    default_limits: limits::Limits,
}

impl RuleEngine {
    fn lock(&self) -> MutexGuard<'_, engine::RuleEngine> {
        // A panic inside a batch is contained and leaves the rule set consistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn spec_from_dict(&self, item: &Bound<'_, PyAny>, position: usize) -> PyResult<RuleSpec> {
        let Ok(dict) = item.cast::<PyDict>() else {
            return Err(PyTypeError::new_err(format!(
                "rules[{position}] must be a dict with 'id' and 'source'"
            )));
        };
        for key in dict.keys() {
            let key: String = key.extract()?;
            if !matches!(
                key.as_str(),
                "id" | "source" | "capabilities" | "kinds" | "limits" | "meta"
            ) {
                return Err(PyValueError::new_err(format!(
                    "rules[{position}]: unknown key '{key}' (expected id, source, capabilities, kinds, limits, meta)"
                )));
            }
        }
        let required = |name: &str| -> PyResult<String> {
            match dict.get_item(name)? {
                Some(v) => v.extract::<String>().map_err(|_| {
                    PyTypeError::new_err(format!("rules[{position}].{name} must be a str"))
                }),
                None => Err(PyValueError::new_err(format!(
                    "rules[{position}] has no '{name}'"
                ))),
            }
        };
        let id = required("id")?;
        let source = required("source")?;
        let get = |name: &str| -> PyResult<Option<Bound<'_, PyAny>>> {
            Ok(dict.get_item(name)?.filter(|v| !v.is_none()))
        };
        self.spec(
            id,
            source,
            get("capabilities")?.as_ref(),
            get("kinds")?.as_ref(),
            get("limits")?.as_ref(),
            get("meta")?.as_ref(),
        )
    }

    fn spec(
        &self,
        id: String,
        source: String,
        capabilities: Option<&Bound<'_, PyAny>>,
        kinds: Option<&Bound<'_, PyAny>>,
        limits: Option<&Bound<'_, PyAny>>,
        meta: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<RuleSpec> {
        let capabilities = match capabilities {
            Some(c) => string_list(c, "capabilities")?,
            None => Vec::new(),
        };
        let kinds = kinds.map(|k| string_list(k, "kinds")).transpose()?;
        let limits = match limits {
            Some(l) => Some(Limits::from_py(l, self.default_limits)?),
            None => None,
        };
        let meta = match meta {
            Some(m) => convert::to_map(m, "meta")?,
            None => rhai::Map::new(),
        };
        Ok(RuleSpec {
            id,
            source,
            capabilities,
            kinds,
            limits,
            meta,
        })
    }
}

/// A list or tuple of str (a bare str is refused: it would iterate as characters).
fn string_list(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    if value.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a list of str, not a str"
        )));
    }
    value
        .try_iter()?
        .map(|item| {
            item?
                .extract::<String>()
                .map_err(|_| PyTypeError::new_err(format!("{what} must contain only str")))
        })
        .collect()
}

#[pymethods]
impl RuleEngine {
    #[new]
    #[pyo3(signature = (limits = None, *, fast_path = true))]
    fn new(limits: Option<&Bound<'_, PyAny>>, fast_path: bool) -> PyResult<Self> {
        let limits = match limits {
            Some(l) => Limits::from_py(l, limits::Limits::default())?,
            None => limits::Limits::default(),
        };
        let mut inner = engine::RuleEngine::new(limits).map_err(PyValueError::new_err)?;
        inner.set_fast_path(fast_path);
        Ok(Self {
            inner: Mutex::new(inner),
            default_limits: limits,
        })
    }

    /// The default limits of rules loaded without their own.
    #[getter]
    fn limits(&self) -> Limits {
        Limits {
            inner: self.default_limits,
        }
    }

    /// How many times a rule source has been compiled; reloading unchanged source reuses
    /// the cached compilation and does not count.
    #[getter]
    fn compiles(&self) -> u64 {
        self.lock().compiles()
    }

    #[pyo3(signature = (rule_id, source, *, capabilities = None, kinds = None, limits = None, meta = None))]
    #[allow(clippy::too_many_arguments)]
    fn load(
        &self,
        py: Python<'_>,
        rule_id: String,
        source: String,
        capabilities: Option<&Bound<'_, PyAny>>,
        kinds: Option<&Bound<'_, PyAny>>,
        limits: Option<&Bound<'_, PyAny>>,
        meta: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Rule> {
        let spec = self.spec(rule_id, source, capabilities, kinds, limits, meta)?;
        let loaded = py.detach(|| self.lock().load(spec));
        match loaded {
            Ok(info) => Ok(Rule { info }),
            Err(err) => Err(load_error(py, err)),
        }
    }

    fn replace_all(&self, py: Python<'_>, rules: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut specs = Vec::new();
        for (position, item) in rules.try_iter()?.enumerate() {
            specs.push(self.spec_from_dict(&item?, position)?);
        }
        py.detach(|| self.lock().replace_all(specs))
            .map_err(|err| load_error(py, err))
    }

    /// Remove a rule; returns False if no rule had that id.
    fn remove(&self, py: Python<'_>, rule_id: &str) -> bool {
        py.detach(|| self.lock().remove(rule_id))
    }

    fn rules(&self, py: Python<'_>) -> Vec<Rule> {
        py.detach(|| self.lock().rules())
            .into_iter()
            .map(|info| Rule { info })
            .collect()
    }

    /// Load (or replace) the named list that `in_list(value, name)` reads.
    fn set_list(&self, py: Python<'_>, name: String, values: &Bound<'_, PyAny>) -> PyResult<()> {
        let values: FastSet<String> = string_list(values, "values")?.into_iter().collect();
        py.detach(|| self.lock().set_list(name, values));
        Ok(())
    }

    /// Load (or replace) the enrichment table `enrich(kind, key)` reads: key -> dict.
    fn set_enrichment(
        &self,
        py: Python<'_>,
        kind: String,
        mapping: &Bound<'_, PyDict>,
    ) -> PyResult<()> {
        let mut table = FastMap::default();
        for (key, value) in mapping.iter() {
            let key: String = key
                .extract()
                .map_err(|_| PyTypeError::new_err("enrichment keys must be str"))?;
            let entry = convert::to_map(&value, &format!("enrichment[{key:?}]"))?;
            table.insert(key, rhai::Dynamic::from_map(entry));
        }
        py.detach(|| self.lock().set_enrichment(kind, table));
        Ok(())
    }

    /// Evaluate newline-delimited JSON (one event per line) with the GIL released.
    /// Event indices are 0-based line numbers: blank lines (only spaces, tabs, CR) are
    /// skipped but still counted, so `event_index` always names the input line.
    fn evaluate_jsonl(&self, py: Python<'_>, data: &Bound<'_, PyBytes>) -> PyResult<BatchResult> {
        let bytes = data.as_bytes();
        let outcome =
            py.detach(|| catch_unwind(AssertUnwindSafe(|| self.lock().evaluate_jsonl(bytes))));
        BatchResult::from_outcome(py, outcome.map_err(|_| internal_error())?)
    }

    /// Evaluate events given as dicts; `event_index` is the position in `events`.
    /// Values that are not JSON-like are reported as parse errors for that event.
    fn evaluate(&self, py: Python<'_>, events: &Bound<'_, PyAny>) -> PyResult<BatchResult> {
        let mut inputs: Vec<(usize, EventInput)> = Vec::new();
        for (index, item) in events.try_iter()?.enumerate() {
            let item = item?;
            let input = if item.is_instance_of::<PyDict>() {
                convert::to_dynamic(&item, &format!("events[{index}]"))
                    .map(Event::Value)
                    .map_err(|e| e.to_string())
            } else {
                Err(format!(
                    "an event must be a dict, not {}",
                    item.get_type().name()?
                ))
            };
            inputs.push((index, input));
        }
        let outcome = py.detach(|| {
            catch_unwind(AssertUnwindSafe(|| {
                self.lock().evaluate(inputs.into_iter())
            }))
        });
        BatchResult::from_outcome(py, outcome.map_err(|_| internal_error())?)
    }

    /// Per rule: evals, matches (alerts emitted), failures, total_ns (time spent in it;
    /// natively decided evaluations are timed on a random eighth of events, scaled up),
    /// native (evaluations the fast path decided without running Rhai).
    /// Counters survive reloading a rule with unchanged source and reset when it changes.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = py.detach(|| self.lock().stats());
        let out = PyDict::new(py);
        for (id, s) in stats {
            let entry = PyDict::new(py);
            entry.set_item("evals", s.evals)?;
            entry.set_item("matches", s.matches)?;
            entry.set_item("failures", s.failures)?;
            entry.set_item("total_ns", s.total_ns)?;
            entry.set_item("native", s.native)?;
            out.set_item(id, entry)?;
        }
        Ok(out)
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        py.detach(|| self.lock().len())
    }
}
