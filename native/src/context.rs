//! The per-thread evaluation context that script functions read while a batch runs.
//!
//! Rhai native functions are `'static` closures registered once per engine, but `emit`,
//! `enrich` and the window functions need the current rule, event and batch. The batch loop
//! moves that state into a thread-local for its duration and takes it back afterwards.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Instant;

use rhai::{Dynamic, EvalAltResult, Map, Position, INT};

use crate::hashing::{FastMap, FastSet};
use crate::matchers::PatternCache;
use crate::windows::{RuleWindows, WindowBounds};

/// Data the host program loads from Python: named lists and enrichment tables.
#[derive(Default, Clone)]
pub struct HostData {
    pub lists: FastMap<String, FastSet<String>>,
    pub enrichment: FastMap<String, FastMap<String, Dynamic>>,
}

/// Why the current event has no usable time for windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventTime {
    At(i64),
    Missing,
    Invalid,
}

/// Everything script functions may touch during one batch.
pub struct BatchContext {
    pub host: Arc<HostData>,
    pub patterns: PatternCache,
    /// Window state of every loaded rule, indexed like the rule list.
    pub windows: Vec<RuleWindows>,
    /// The rule being evaluated (index into `windows`).
    pub rule: usize,
    pub can_enrich: bool,
    pub bounds: WindowBounds,
    pub max_emits: usize,
    /// Alerts raised by the current rule on the current event.
    pub emits: Vec<Map>,
    pub event_time: EventTime,
    /// Window calls the native fast paths made for real on the current event, in order;
    /// a rule that then has to be interpreted replays its own from here (see [`replay`]).
    pub journal: Vec<WindowCall>,
    /// How far into `journal` the interpreted rules have read.
    pub replayed: usize,
}

/// Which window function was called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowOp {
    Push,
    Count,
    Distinct,
}

/// One window call a fast path made (and applied to the rule's windows), with its result.
///
/// A fast path that runs into a step only Rhai can take (an `emit` once a threshold is
/// crossed, say) hands the rule to Rhai, which runs it from the start. Rhai's window calls
/// up to that step are the same calls on the same event and state, so instead of recording
/// the event a second time each returns the result the fast path got.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowCall {
    pub rule: usize,
    pub op: WindowOp,
    pub key: String,
    pub value: Option<String>,
    /// The window length as given, compared bit for bit.
    pub seconds: Option<u64>,
    pub result: INT,
}

/// The recorded result of this call, when a fast path made it for the current rule on the
/// current event; `None` when the call is new and must really run. A call that differs
/// from the recorded one means the fast path and Rhai disagree: an engine bug, reported as
/// an error of the rule rather than silently recording twice.
pub fn replay(
    ctx: &mut BatchContext,
    op: WindowOp,
    key: &str,
    value: Option<&str>,
    seconds: Option<f64>,
) -> Result<Option<INT>, Box<EvalAltResult>> {
    let Some(call) = ctx.journal.get(ctx.replayed) else {
        return Ok(None);
    };
    if call.rule != ctx.rule {
        return Ok(None);
    }
    ctx.replayed += 1;
    let same = call.op == op
        && call.key == key
        && call.value.as_deref() == value
        && call.seconds == seconds.map(f64::to_bits);
    if !same {
        return Err(runtime_error(format!(
            "internal error in the engine: the native fast path recorded {:?}({:?}) where Rhai \
             calls {op:?}({key:?}); please report this rule",
            call.op, call.key
        )));
    }
    Ok(Some(call.result))
}

/// Past the journal entries of `rule` that its evaluation did not replay.
pub fn skip_journal(ctx: &mut BatchContext, rule: usize) {
    while ctx
        .journal
        .get(ctx.replayed)
        .is_some_and(|c| c.rule == rule)
    {
        ctx.replayed += 1;
    }
}

/// What a script-facing limit (as opposed to a Rhai built-in one) reports when it stops a rule.
pub const EMIT_LIMIT: &str = "max_emits_per_event";
/// What the wall-clock deadline reports when it stops a rule.
pub const DEADLINE: &str = "deadline_ms";
/// What a call to a function the rule has no capability for reports.
pub const CAPABILITY: &str = "capability";

thread_local! {
    static CONTEXT: RefCell<Option<BatchContext>> = const { RefCell::new(None) };
    static DEADLINE_AT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Install `ctx` for the current thread, run `body`, and take `ctx` back. `body` is expected
/// to catch its own panics; the context is cleared even if it does not. `None` only if a
/// panic escaped `body`'s own guard in a way that lost the context.
pub fn with_batch<R>(ctx: BatchContext, body: impl FnOnce() -> R) -> (R, Option<BatchContext>) {
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            // Runs on unwind too: leaves no stale context behind for the next batch.
            let _ = CONTEXT.with(|c| c.replace(None));
            DEADLINE_AT.with(|d| d.set(None));
        }
    }
    let _ = CONTEXT.with(|c| c.replace(Some(ctx)));
    let clear = Clear;
    let result = body();
    let ctx = CONTEXT.with(|c| c.replace(None));
    drop(clear);
    (result, ctx)
}

/// Run `f` on the current batch context; an error if called outside a batch.
pub fn with_context<R>(
    f: impl FnOnce(&mut BatchContext) -> Result<R, Box<EvalAltResult>>,
) -> Result<R, Box<EvalAltResult>> {
    CONTEXT.with(|c| match c.try_borrow_mut() {
        Ok(mut guard) => match guard.as_mut() {
            Some(ctx) => f(ctx),
            None => Err(runtime_error(
                "this function is only available while a rule runs",
            )),
        },
        Err(_) => Err(runtime_error("re-entrant call into the rule context")),
    })
}

/// Set the wall-clock deadline checked by the engine's progress callback.
pub fn set_deadline(at: Option<Instant>) {
    DEADLINE_AT.with(|d| d.set(at));
}

/// Has the current deadline passed?
pub fn deadline_passed() -> bool {
    DEADLINE_AT.with(|d| d.get().is_some_and(|at| Instant::now() >= at))
}

pub fn runtime_error(message: impl Into<String>) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(Dynamic::from(message.into()), Position::NONE).into()
}

/// Stop the rule with a reason the script's own `try`/`catch` cannot intercept;
/// `token` is one of [`EMIT_LIMIT`], [`DEADLINE`], [`CAPABILITY`].
pub fn terminate(token: &'static str) -> Box<EvalAltResult> {
    EvalAltResult::ErrorTerminated(Dynamic::from(token), Position::NONE).into()
}

/// Adjust the batch context between rule evaluations (no-op outside a batch).
pub fn update(f: impl FnOnce(&mut BatchContext)) {
    CONTEXT.with(|c| {
        if let Ok(mut guard) = c.try_borrow_mut() {
            if let Some(ctx) = guard.as_mut() {
                f(ctx);
            }
        }
    });
}

/// The alerts the current rule emitted on the current event, leaving none behind.
pub fn take_emits() -> Vec<Map> {
    let mut emits = Vec::new();
    update(|ctx| emits = std::mem::take(&mut ctx.emits));
    emits
}
