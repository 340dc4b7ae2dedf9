//! Python values to Rhai values and back (events passed as dicts, metadata, enrichment
//! tables, alerts). The JSON hot path never comes through here.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use rhai::{Array, Dynamic, Map, FLOAT, INT};

/// Nesting accepted from Python, the same order as JSON's usual recursion limit.
const MAX_DEPTH: usize = 128;

/// Convert a JSON-like Python value (None, bool, int, float, str, list, tuple, dict with str
/// keys) into a Rhai value. `where_` names the value in error messages.
pub fn to_dynamic(value: &Bound<'_, PyAny>, where_: &str) -> PyResult<Dynamic> {
    convert(value, where_, 0)
}

/// Convert a Python dict with str keys into a Rhai object map.
pub fn to_map(value: &Bound<'_, PyAny>, where_: &str) -> PyResult<Map> {
    match to_dynamic(value, where_)?.try_cast::<Map>() {
        Some(map) => Ok(map),
        None => Err(PyTypeError::new_err(format!(
            "{where_} must be a dict, not {}",
            type_name(value)
        ))),
    }
}

fn convert(value: &Bound<'_, PyAny>, where_: &str, depth: usize) -> PyResult<Dynamic> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(format!(
            "{where_} is nested deeper than {MAX_DEPTH} levels"
        )));
    }
    if value.is_none() {
        return Ok(Dynamic::UNIT);
    }
    // bool before int: Python's bool is a subclass of int.
    if let Ok(b) = value.cast::<PyBool>() {
        return Ok(Dynamic::from_bool(b.is_true()));
    }
    if value.is_instance_of::<PyInt>() {
        return Ok(match value.extract::<INT>() {
            Ok(i) => Dynamic::from_int(i),
            // Beyond 64 bits: as a float, like JSON numbers that do not fit.
            Err(_) => Dynamic::from_float(value.extract::<FLOAT>()?),
        });
    }
    if let Ok(f) = value.cast::<PyFloat>() {
        return Ok(Dynamic::from_float(f.value()));
    }
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(Dynamic::from(s.to_str()?.to_string()));
    }
    if let Ok(d) = value.cast::<PyDict>() {
        let mut map = Map::new();
        for (k, v) in d.iter() {
            let Ok(key) = k.cast::<PyString>() else {
                return Err(PyTypeError::new_err(format!(
                    "{where_}: dict keys must be str, not {}",
                    type_name(&k)
                )));
            };
            let key = key.to_str()?;
            map.insert(key.into(), convert(&v, where_, depth + 1)?);
        }
        return Ok(Dynamic::from_map(map));
    }
    if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        let mut array = Array::new();
        for item in value.try_iter()? {
            array.push(convert(&item?, where_, depth + 1)?);
        }
        return Ok(Dynamic::from_array(array));
    }
    Err(PyTypeError::new_err(format!(
        "{where_}: {} values are not supported (use None, bool, int, float, str, list or dict)",
        type_name(value)
    )))
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map_or_else(|_| "?".to_string(), |n| n.to_string())
}

/// Convert a Rhai value into the matching Python value; values without a JSON counterpart
/// (function pointers, for example) become their text form.
pub fn to_py<'py>(py: Python<'py>, value: &Dynamic) -> PyResult<Bound<'py, PyAny>> {
    if value.is_unit() {
        return Ok(py.None().into_bound(py));
    }
    if let Ok(b) = value.as_bool() {
        return Ok(PyBool::new(py, b).to_owned().into_any());
    }
    if let Ok(i) = value.as_int() {
        return Ok(i.into_pyobject(py)?.into_any());
    }
    if let Ok(f) = value.as_float() {
        return Ok(PyFloat::new(py, f).into_any());
    }
    if let Ok(s) = value.as_immutable_string_ref() {
        return Ok(PyString::new(py, s.as_str()).into_any());
    }
    if let Ok(c) = value.as_char() {
        return Ok(PyString::new(py, c.encode_utf8(&mut [0u8; 4])).into_any());
    }
    if let Ok(map) = value.as_map_ref() {
        return Ok(map_to_py(py, &map)?.into_any());
    }
    if let Ok(array) = value.as_array_ref() {
        let list = PyList::empty(py);
        for item in array.iter() {
            list.append(to_py(py, item)?)?;
        }
        return Ok(list.into_any());
    }
    if let Ok(blob) = value.as_blob_ref() {
        return Ok(PyBytes::new(py, &blob).into_any());
    }
    Ok(PyString::new(py, &value.to_string()).into_any())
}

pub fn map_to_py<'py>(py: Python<'py>, map: &Map) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, value) in map {
        dict.set_item(key.as_str(), to_py(py, value)?)?;
    }
    Ok(dict)
}
