//! The functions a rule can call: `emit`, matching helpers, `enrich`, and windows.

use rhai::{
    Array, Dynamic, Engine, EvalAltResult, FuncRegistration, ImmutableString, Map, FLOAT, INT,
};

use crate::context::{self, runtime_error, terminate, EventTime, WindowOp, CAPABILITY, EMIT_LIMIT};
use crate::matchers::{cidr_contains, entropy};
use crate::windows::window_micros;

type Result<T> = std::result::Result<T, Box<EvalAltResult>>;

/// Register the whole script API on `engine`.
pub fn register(engine: &mut Engine) {
    register_emit(engine);
    register_matchers(engine);
    register_lookups(engine);
    register_windows(engine);
    register_membership(engine);
}

/// Side-effecting functions are volatile so no optimizer pass ever calls them at compile time.
fn volatile(name: &str) -> FuncRegistration {
    FuncRegistration::new(name).with_volatility(true)
}

fn register_emit(engine: &mut Engine) {
    volatile("emit").register_into_engine(engine, |alert: Map| emit(alert));
    volatile("emit").register_into_engine(engine, || emit(Map::new()));
}

fn emit(alert: Map) -> Result<()> {
    context::with_context(|ctx| {
        if ctx.emits.len() >= ctx.max_emits {
            return Err(terminate(EMIT_LIMIT));
        }
        ctx.emits.push(alert);
        Ok(())
    })
}

fn register_matchers(engine: &mut Engine) {
    // Missing event fields read as `()`: they match nothing rather than failing the rule.
    volatile("glob").register_into_engine(engine, |text: &str, pattern: &str| {
        context::with_context(|ctx| {
            let re = ctx.patterns.glob(pattern).map_err(runtime_error)?;
            Ok(re.is_match(text))
        })
    });
    engine.register_fn("glob", |_: (), _: &str| false);
    volatile("re_match").register_into_engine(engine, |text: &str, pattern: &str| {
        context::with_context(|ctx| {
            let re = ctx.patterns.regex(pattern).map_err(runtime_error)?;
            Ok(re.is_match(text))
        })
    });
    engine.register_fn("re_match", |_: (), _: &str| false);
    engine.register_fn("cidr", |ip: &str, network: &str| -> Result<bool> {
        cidr_contains(ip, network).map_err(runtime_error)
    });
    engine.register_fn("cidr", |_: (), _: &str| false);
    engine.register_fn("entropy", |text: &str| -> FLOAT { entropy(text) });
    engine.register_fn("entropy", |_: ()| -> FLOAT { 0.0 });
}

/// `x in [a, b, c]` is Rhai's `contains(array, x)`, which calls the `==` operator through
/// the engine once per element (a function lookup each). For string and integer needles
/// these exact-type overloads compare directly, giving what Rhai's built-in `==` gives for
/// every element type: strings by content, a char equal to a one-char string, an integer
/// against a float as Rhai's checked float `==` does, anything else of another type `false`.
fn register_membership(engine: &mut Engine) {
    FuncRegistration::new("contains")
        .with_purity(true)
        .register_into_engine(engine, |array: &mut Array, value: ImmutableString| {
            array.iter().any(|item| equals_str(item, &value))
        });
    FuncRegistration::new("contains")
        .with_purity(true)
        .register_into_engine(engine, |array: &mut Array, value: INT| {
            array.iter().any(|item| equals_int(item, value))
        });
}

fn equals_str(item: &Dynamic, value: &str) -> bool {
    if let Ok(text) = item.as_immutable_string_ref() {
        return text.as_str() == value;
    }
    match item.as_char() {
        Ok(c) => {
            let mut chars = value.chars();
            chars.next() == Some(c) && chars.next().is_none()
        }
        Err(_) => false,
    }
}

fn equals_int(item: &Dynamic, value: INT) -> bool {
    match (item.as_int(), item.as_float()) {
        (Ok(i), _) => i == value,
        (_, Ok(x)) => {
            // Rhai's checked float `==`: equal within a relative epsilon.
            let y = value as FLOAT;
            let max = if x * y == 0.0 {
                1.0
            } else {
                x.abs().max(y.abs())
            };
            max == 0.0 || (x - y).abs() / max <= FLOAT::EPSILON
        }
        _ => false,
    }
}

fn register_lookups(engine: &mut Engine) {
    volatile("in_list").register_into_engine(engine, |value: Dynamic, name: &str| {
        context::with_context(|ctx| match ctx.host.lists.get(name) {
            Some(list) => Ok(!value.is_unit() && list.contains(key_text(&value).as_str())),
            None => Err(runtime_error(format!(
                "in_list: no list named '{name}' is loaded (RuleEngine.set_list)"
            ))),
        })
    });
    volatile("enrich").register_into_engine(engine, |kind: &str, key: Dynamic| {
        context::with_context(|ctx| {
            if !ctx.can_enrich {
                return Err(terminate(CAPABILITY));
            }
            let found = ctx
                .host
                .enrichment
                .get(kind)
                .and_then(|table| table.get(key_text(&key).as_str()));
            Ok(found.cloned().unwrap_or(Dynamic::UNIT))
        })
    });
}

fn register_windows(engine: &mut Engine) {
    volatile("window_push").register_into_engine(engine, |key: Dynamic| {
        context::with_context(|ctx| {
            let now = event_time(ctx.event_time, "window_push")?;
            let key = key_text(&key);
            if context::replay(ctx, WindowOp::Push, &key, None, None)?.is_some() {
                return Ok(());
            }
            let bounds = ctx.bounds;
            current_windows(ctx)?.push(&key, now, bounds);
            Ok(())
        })
    });
    volatile("window_count").register_into_engine(engine, |key: Dynamic, seconds: INT| {
        window_count(&key, seconds as FLOAT)
    });
    volatile("window_count").register_into_engine(engine, |key: Dynamic, seconds: FLOAT| {
        window_count(&key, seconds)
    });
    volatile("window_distinct").register_into_engine(
        engine,
        |key: Dynamic, value: Dynamic, seconds: INT| {
            window_distinct(&key, &value, seconds as FLOAT)
        },
    );
    volatile("window_distinct")
        .register_into_engine(engine, |key: Dynamic, value: Dynamic, seconds: FLOAT| {
            window_distinct(&key, &value, seconds)
        });
}

fn window_count(key: &Dynamic, seconds: FLOAT) -> Result<INT> {
    context::with_context(|ctx| {
        let now = event_time(ctx.event_time, "window_count")?;
        let span =
            window_micros(seconds).map_err(|e| runtime_error(format!("window_count: {e}")))?;
        let key = key_text(key);
        if let Some(count) = context::replay(ctx, WindowOp::Count, &key, None, Some(seconds))? {
            return Ok(count);
        }
        let count = current_windows(ctx)?.count(&key, now, span);
        Ok(INT::try_from(count).unwrap_or(INT::MAX))
    })
}

fn window_distinct(key: &Dynamic, value: &Dynamic, seconds: FLOAT) -> Result<INT> {
    context::with_context(|ctx| {
        let now = event_time(ctx.event_time, "window_distinct")?;
        let span =
            window_micros(seconds).map_err(|e| runtime_error(format!("window_distinct: {e}")))?;
        let (key, value) = (key_text(key), key_text(value));
        let recorded = context::replay(ctx, WindowOp::Distinct, &key, Some(&value), Some(seconds))?;
        if let Some(count) = recorded {
            return Ok(count);
        }
        let bounds = ctx.bounds;
        let count = current_windows(ctx)?.distinct(&key, &value, now, span, bounds);
        Ok(INT::try_from(count).unwrap_or(INT::MAX))
    })
}

fn current_windows(ctx: &mut context::BatchContext) -> Result<&mut crate::windows::RuleWindows> {
    let rule = ctx.rule;
    ctx.windows
        .get_mut(rule)
        .ok_or_else(|| runtime_error("window state missing for this rule"))
}

fn event_time(time: EventTime, function: &str) -> Result<i64> {
    match time {
        EventTime::At(t) => Ok(t),
        EventTime::Missing => Err(runtime_error(format!(
            "{function}: the event has no 'ts' string; windows run on event time"
        ))),
        EventTime::Invalid => Err(runtime_error(format!(
            "{function}: the event's 'ts' is not an RFC 3339 timestamp such as 2026-12-03T08:00:00Z"
        ))),
    }
}

/// Window keys, list members and enrichment keys compare as text: strings as they are,
/// anything else in its display form (so `in_list(event.proc.uid, "admins")` works for ints).
fn key_text(value: &Dynamic) -> ImmutableString {
    match value.as_immutable_string_ref() {
        Ok(s) => s.clone(),
        Err(_) => value.to_string().into(),
    }
}
