//! The rule set: loading and caching compiled rules, the kind prefilter, and batch evaluation.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use rhai::packages::{Package, StandardPackage};
use rhai::{
    ASTNode, Caches, Dynamic, Engine, EvalAltResult, Expr, Map, Module, Position, Scope, Shared,
    Stmt, AST,
};
use sha2::{Digest, Sha256};

use crate::context::{self, BatchContext, EventTime, HostData, CAPABILITY, DEADLINE, EMIT_LIMIT};
use crate::events::{Event, EventInput};
use crate::fastpath::{FastPath, Paths, Side, Slot};
use crate::hashing::{FastMap, FastSet};
use crate::json::Bump;
use crate::limits::{EngineLimits, Limits};
use crate::matchers::PatternCache;
use crate::projection::Projection;
use crate::script_api;
use crate::windows::{RuleWindows, WindowBounds};

/// Capabilities a rule may be granted, and the script function each one unlocks.
pub const CAPABILITIES: &[(&str, &str)] = &[("enrich", "enrich")];

/// Unloaded compiled scripts kept for a later reload, beyond those in use.
const SPARE_ASTS: usize = 256;

/// A rule as the host program describes it.
#[derive(Clone, Debug, Default)]
pub struct RuleSpec {
    pub id: String,
    pub source: String,
    pub capabilities: Vec<String>,
    /// Event kinds the rule sees; `None` means every kind.
    pub kinds: Option<Vec<String>>,
    /// Overrides the engine's default limits for this rule.
    pub limits: Option<Limits>,
    /// Manifest values (title, severity, version...) copied into every alert as defaults.
    pub meta: Map,
}

/// What `rules()` reports about a loaded rule.
#[derive(Clone, Debug)]
pub struct RuleInfo {
    pub id: String,
    pub hash: String,
    pub kinds: Option<Vec<String>>,
    pub capabilities: Vec<String>,
    pub meta: Map,
    pub limits: Limits,
}

/// Why a rule could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// The source does not compile, or calls what the rule may not call.
    Compile {
        rule_id: String,
        message: String,
        line: Option<usize>,
        column: Option<usize>,
    },
    /// The rule is larger than its limits allow.
    Limit { rule_id: String, message: String },
    /// The rule's description is malformed (bad id, unknown capability, bad limits...).
    Invalid { rule_id: String, message: String },
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Compile {
                rule_id,
                message,
                line,
                column,
            } => {
                write!(f, "rule '{rule_id}'")?;
                if let (Some(line), Some(column)) = (line, column) {
                    write!(f, " line {line}, column {column}")?;
                }
                write!(f, ": {message}")
            }
            Self::Limit { rule_id, message } | Self::Invalid { rule_id, message } => {
                write!(f, "rule '{rule_id}': {message}")
            }
        }
    }
}

/// Per-rule counters since the rule (with this source) was loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleStats {
    pub evals: u64,
    pub matches: u64,
    pub failures: u64,
    /// Time spent evaluating. Interpreted evaluations are timed one by one; the native
    /// phase is timed on a random eighth of events and counted eight times ([`TimeSample`]).
    pub total_ns: u64,
    /// Evaluations the native fast path decided (no alert), without running Rhai.
    pub native: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Stopped by one of its limits (operations, depth, sizes, emits, deadline).
    Limit,
    /// A script error (type mismatch, missing function, bad pattern, `throw`...).
    Runtime,
    /// Called a function it was not granted the capability for.
    Capability,
    /// A bug in the engine, contained to this rule and event.
    Panic,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Limit => "limit",
            Self::Runtime => "runtime",
            Self::Capability => "capability",
            Self::Panic => "panic",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Match {
    pub rule_id: String,
    pub event_index: usize,
    pub alert: Map,
}

#[derive(Clone, Debug)]
pub struct Failure {
    pub rule_id: String,
    pub event_index: usize,
    pub kind: FailureKind,
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct ParseError {
    pub event_index: usize,
    pub message: String,
}

/// Everything one batch produced.
#[derive(Clone, Debug, Default)]
pub struct BatchOutcome {
    /// Events parsed and offered to the rules (blank lines and parse errors excluded).
    pub events: usize,
    pub matches: Vec<Match>,
    pub failures: Vec<Failure>,
    pub parse_errors: Vec<ParseError>,
}

impl BatchOutcome {
    /// Add what a later part of the same batch produced.
    fn absorb(&mut self, later: BatchOutcome) {
        self.events += later.events;
        self.matches.extend(later.matches);
        self.failures.extend(later.failures);
        self.parse_errors.extend(later.parse_errors);
    }
}

struct LoadedRule {
    id: String,
    hash: String,
    kinds: Option<Vec<String>>,
    capabilities: Vec<String>,
    can_enrich: bool,
    meta: Map,
    /// Alert defaults: built-ins overridden by `meta`.
    alert_defaults: Map,
    limits: Limits,
    engine: Arc<Engine>,
    ast: Arc<AST>,
    /// What of the event this rule can read.
    projection: Projection,
    windows: RuleWindows,
    stats: RuleStats,
    /// Rhai's function-resolution cache, kept across this rule's evaluations.
    caches: Caches,
    /// The pure part of the rule, evaluated natively (`None`: always interpreted).
    fast: Option<FastPath>,
}

impl LoadedRule {
    fn info(&self) -> RuleInfo {
        RuleInfo {
            id: self.id.clone(),
            hash: self.hash.clone(),
            kinds: self.kinds.clone(),
            capabilities: self.capabilities.clone(),
            meta: self.meta.clone(),
            limits: self.limits,
        }
    }
}

type AstKey = (String, EngineLimits);

/// A set of compiled rules plus the host data they read. Not thread-safe by itself: the
/// Python binding keeps it behind a mutex.
pub struct RuleEngine {
    default_limits: Limits,
    rules: Vec<LoadedRule>,
    /// For each kind some rule names: indices of the rules that see it, in load order.
    by_kind: FastMap<String, Vec<usize>>,
    /// Rules without a kind list: what events of any other kind (or none) see.
    any_kind: Vec<usize>,
    /// What of an event any loaded rule (or the prefilter and windows) can read.
    projection: Arc<Projection>,
    engines: HashMap<EngineLimits, Arc<Engine>>,
    asts: HashMap<AstKey, Arc<AST>>,
    host: Arc<HostData>,
    patterns: PatternCache,
    compiles: u64,
    /// Whether rules' native fast paths are used (off only to compare against Rhai alone).
    fast_path: bool,
    /// The event paths the fast paths read, numbered for the per-event path cache.
    paths: Paths,
    /// Which events' native phase is timed.
    sample: TimeSample,
    /// Where `evaluate_jsonl` parses events; reused from batch to batch.
    arena: Bump,
}

/// Events parsed into the arena between two resets (a thousand events take ~1 MB).
const ARENA_EVENTS: usize = 1024;

/// Picks the events whose native phase is timed: one in [`TimeSample::EVERY`], at random
/// (a fixed stride could beat in step with a periodic input). A clock read costs ~25 ns
/// here, and timing every event took two of them, ~4% of a batch; the sampled time,
/// multiplied by the stride, is an unbiased estimate of the total.
#[derive(Clone, Copy, Debug)]
struct TimeSample(u64);

impl TimeSample {
    const EVERY: u64 = 8;

    /// xorshift64: whether to time the next event.
    fn next(&mut self) -> bool {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % Self::EVERY == 0
    }
}

impl Default for TimeSample {
    fn default() -> Self {
        Self(0x9E37_79B9_7F4A_7C15)
    }
}

impl RuleEngine {
    pub fn new(default_limits: Limits) -> Result<Self, String> {
        default_limits.validate()?;
        Ok(Self {
            default_limits,
            rules: Vec::new(),
            by_kind: FastMap::default(),
            any_kind: Vec::new(),
            projection: Arc::new(base_projection()),
            engines: HashMap::new(),
            asts: HashMap::new(),
            host: Arc::new(HostData::default()),
            patterns: PatternCache::default(),
            compiles: 0,
            fast_path: true,
            paths: Paths::default(),
            sample: TimeSample::default(),
            arena: Bump::new(),
        })
    }

    /// Use the rules' native fast paths (the default) or interpret every evaluation in Rhai.
    /// Results are the same either way; this exists to show that, and to measure the gain.
    pub fn set_fast_path(&mut self, enabled: bool) {
        self.fast_path = enabled;
    }

    /// How many loaded rules have a native fast path.
    pub fn fast_paths(&self) -> usize {
        self.rules.iter().filter(|r| r.fast.is_some()).count()
    }

    /// Number of loaded rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Number of times a rule source was actually compiled (cache misses).
    pub fn compiles(&self) -> u64 {
        self.compiles
    }

    /// Load or replace one rule. Window state and stats survive when the source is unchanged.
    pub fn load(&mut self, spec: RuleSpec) -> Result<RuleInfo, LoadError> {
        let mut rule = self.prepare(spec)?;
        let info = rule.info();
        match self.rules.iter().position(|r| r.id == rule.id) {
            Some(i) => {
                carry_state(&mut self.rules[i], &mut rule);
                self.rules[i] = rule;
            }
            None => self.rules.push(rule),
        }
        self.reindex();
        Ok(info)
    }

    /// Replace the whole rule set atomically: all compile and take over, or nothing changes.
    pub fn replace_all(&mut self, specs: Vec<RuleSpec>) -> Result<(), LoadError> {
        let mut seen = HashSet::new();
        for spec in &specs {
            if !seen.insert(spec.id.as_str()) {
                return Err(LoadError::Invalid {
                    rule_id: spec.id.clone(),
                    message: "the rule id appears more than once in the set".into(),
                });
            }
        }
        let mut prepared = Vec::with_capacity(specs.len());
        for spec in specs {
            prepared.push(self.prepare(spec)?);
        }
        let mut old: HashMap<String, LoadedRule> =
            self.rules.drain(..).map(|r| (r.id.clone(), r)).collect();
        for rule in &mut prepared {
            if let Some(mut previous) = old.remove(&rule.id) {
                carry_state(&mut previous, rule);
            }
        }
        self.rules = prepared;
        self.reindex();
        Ok(())
    }

    /// Remove a rule; `false` if no rule has that id.
    pub fn remove(&mut self, rule_id: &str) -> bool {
        let before = self.rules.len();
        self.rules.retain(|r| r.id != rule_id);
        let removed = self.rules.len() != before;
        if removed {
            self.reindex();
        }
        removed
    }

    pub fn rules(&self) -> Vec<RuleInfo> {
        self.rules.iter().map(LoadedRule::info).collect()
    }

    pub fn set_list(&mut self, name: String, values: FastSet<String>) {
        Arc::make_mut(&mut self.host).lists.insert(name, values);
    }

    pub fn set_enrichment(&mut self, kind: String, table: FastMap<String, Dynamic>) {
        Arc::make_mut(&mut self.host).enrichment.insert(kind, table);
    }

    pub fn stats(&self) -> Vec<(String, RuleStats)> {
        self.rules.iter().map(|r| (r.id.clone(), r.stats)).collect()
    }

    /// Evaluate newline-delimited JSON. Event indices are line numbers (0-based), so blank
    /// lines are skipped but still advance the index.
    pub fn evaluate_jsonl(&mut self, data: &[u8]) -> BatchOutcome {
        let projection = Arc::clone(&self.projection);
        let mut arena = std::mem::take(&mut self.arena);
        let mut outcome = BatchOutcome::default();
        let mut lines = crate::events::jsonl_lines(data).peekable();
        // The parsed events go into the arena, which is emptied (keeping its memory) every
        // `ARENA_EVENTS` events, so that a large batch does not hold all of its events.
        while lines.peek().is_some() {
            arena.reset();
            let events = lines.by_ref().take(ARENA_EVENTS).map(|(index, line)| {
                (index, crate::events::parse_event(line, &projection, &arena))
            });
            outcome.absorb(self.evaluate(events));
        }
        self.arena = arena;
        outcome
    }

    /// Evaluate already-decoded events (`Err` entries are reported as parse errors).
    pub fn evaluate<'a, I>(&mut self, events: I) -> BatchOutcome
    where
        I: Iterator<Item = (usize, EventInput<'a>)>,
    {
        let windows = self
            .rules
            .iter_mut()
            .map(|r| std::mem::take(&mut r.windows))
            .collect();
        let batch = BatchContext {
            host: Arc::clone(&self.host),
            patterns: std::mem::take(&mut self.patterns),
            windows,
            rule: 0,
            can_enrich: false,
            bounds: WindowBounds {
                max_keys: 1,
                max_entries_per_key: 1,
            },
            max_emits: 0,
            emits: Vec::new(),
            event_time: EventTime::Missing,
            journal: Vec::new(),
            replayed: 0,
        };
        let mut outcome = BatchOutcome::default();
        let host = Arc::clone(&self.host);
        let fast_path = self.fast_path;
        let paths = self.paths.len();
        let (_, returned) = context::with_batch(batch, || {
            run_batch(
                &mut self.rules,
                &self.by_kind,
                &self.any_kind,
                Natively {
                    enabled: fast_path,
                    host: &host,
                    paths,
                    sample: &mut self.sample,
                },
                events,
                &mut outcome,
            )
        });
        // Without the context (only after a contained panic) window state restarts empty.
        if let Some(batch) = returned {
            self.patterns = batch.patterns;
            for (rule, windows) in self.rules.iter_mut().zip(batch.windows) {
                rule.windows = windows;
            }
        }
        outcome
    }

    fn prepare(&mut self, spec: RuleSpec) -> Result<LoadedRule, LoadError> {
        let RuleSpec {
            id,
            source,
            capabilities,
            kinds,
            limits,
            meta,
        } = spec;
        let invalid = |message: String| LoadError::Invalid {
            rule_id: id.clone(),
            message,
        };
        if id.trim().is_empty() {
            return Err(invalid("the rule id must be a non-empty string".into()));
        }
        let limits = limits.unwrap_or(self.default_limits);
        limits.validate().map_err(invalid)?;
        for capability in &capabilities {
            if !CAPABILITIES.iter().any(|(name, _)| name == capability) {
                let known: Vec<&str> = CAPABILITIES.iter().map(|(name, _)| *name).collect();
                return Err(invalid(format!(
                    "unknown capability '{capability}' (known: {})",
                    known.join(", ")
                )));
            }
        }
        if kinds.as_ref().is_some_and(Vec::is_empty) {
            return Err(invalid(
                "kinds must be None (every kind) or a non-empty list".into(),
            ));
        }
        if source.len() > limits.max_source_size {
            return Err(LoadError::Limit {
                rule_id: id,
                message: format!(
                    "the source is {} bytes, more than max_source_size ({})",
                    source.len(),
                    limits.max_source_size
                ),
            });
        }
        let hash = sha256_hex(&source);
        let engine_limits = limits.engine_limits();
        let engine = self.engine_for(engine_limits);
        let key = (hash.clone(), engine_limits);
        let ast = match self.asts.get(&key) {
            Some(ast) => Arc::clone(ast),
            None => {
                self.compiles += 1;
                let ast = Arc::new(compile(&engine, &id, &source)?);
                self.asts.insert(key, Arc::clone(&ast));
                ast
            }
        };
        let can_enrich = capabilities.iter().any(|c| c == "enrich");
        for (capability, function) in CAPABILITIES {
            if !capabilities.iter().any(|c| c == capability) {
                if let Some(pos) = find_call(&ast, function) {
                    return Err(LoadError::Compile {
                        rule_id: id,
                        message: format!(
                            "{function}() needs capability '{capability}', which this rule is not granted"
                        ),
                        line: pos.line(),
                        column: pos.position(),
                    });
                }
            }
        }
        let alert_defaults = alert_defaults(&id, &meta);
        let projection = Projection::of_rule(&ast);
        let fast = FastPath::compile(&ast, &limits, &mut self.paths);
        Ok(LoadedRule {
            id,
            hash,
            kinds,
            capabilities,
            can_enrich,
            meta,
            alert_defaults,
            limits,
            engine,
            ast,
            projection,
            windows: RuleWindows::default(),
            stats: RuleStats::default(),
            caches: Caches::new(),
            fast,
        })
    }

    fn engine_for(&mut self, limits: EngineLimits) -> Arc<Engine> {
        Arc::clone(
            self.engines
                .entry(limits)
                .or_insert_with(|| Arc::new(build_engine(limits))),
        )
    }

    /// Rebuild the kind prefilter and drop engines and ASTs nothing uses any more.
    fn reindex(&mut self) {
        let mut by_kind: FastMap<String, Vec<usize>> = FastMap::default();
        for rule in &self.rules {
            for kind in rule.kinds.iter().flatten() {
                by_kind.entry(kind.clone()).or_default();
            }
        }
        let mut any_kind = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            match &rule.kinds {
                None => {
                    any_kind.push(i);
                    by_kind.values_mut().for_each(|v| v.push(i));
                }
                Some(kinds) => {
                    for kind in kinds {
                        if let Some(v) = by_kind.get_mut(kind) {
                            if v.last() != Some(&i) {
                                v.push(i);
                            }
                        }
                    }
                }
            }
        }
        self.by_kind = by_kind;
        self.any_kind = any_kind;
        let mut projection = base_projection();
        for rule in &self.rules {
            projection.union(&rule.projection);
        }
        self.projection = Arc::new(projection);

        let used: HashSet<EngineLimits> = self
            .rules
            .iter()
            .map(|r| r.limits.engine_limits())
            .collect();
        self.engines.retain(|limits, _| used.contains(limits));
        if self.asts.len() > self.rules.len() + SPARE_ASTS {
            let in_use: HashSet<AstKey> = self
                .rules
                .iter()
                .map(|r| (r.hash.clone(), r.limits.engine_limits()))
                .collect();
            self.asts.retain(|key, _| in_use.contains(key));
        }
    }
}

/// What the engine itself reads of every event: `kind` for the prefilter, `ts` for windows.
fn base_projection() -> Projection {
    let mut projection = Projection::default();
    projection.add_path(&["kind"]);
    projection.add_path(&["ts"]);
    projection
}

/// When a rule is reloaded with the same source, it keeps its windows and counters.
fn carry_state(previous: &mut LoadedRule, next: &mut LoadedRule) {
    if previous.hash == next.hash {
        next.windows = std::mem::take(&mut previous.windows);
        next.stats = previous.stats;
    }
}

fn sha256_hex(source: &str) -> String {
    let digest = Sha256::digest(source.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
    }
    hex
}

fn alert_defaults(rule_id: &str, meta: &Map) -> Map {
    let mut defaults = Map::new();
    defaults.insert("title".into(), rule_id.into());
    defaults.insert("severity".into(), "medium".into());
    defaults.insert("context".into(), Dynamic::from_map(Map::new()));
    defaults.insert("dedup".into(), Dynamic::UNIT);
    for (key, value) in meta {
        defaults.insert(key.clone(), value.clone());
    }
    defaults
}

fn standard_package() -> Shared<Module> {
    static PACKAGE: OnceLock<Shared<Module>> = OnceLock::new();
    PACKAGE
        .get_or_init(|| StandardPackage::new().as_shared_module())
        .clone()
}

/// A sandboxed engine: standard library only (no files, modules or `eval`), printing
/// disabled, every limit set explicitly, and a wall-clock deadline via `on_progress`.
fn build_engine(limits: EngineLimits) -> Engine {
    let mut engine = Engine::new_raw();
    engine.register_global_module(standard_package());
    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_max_expr_depths(limits.max_expr_depth, (limits.max_expr_depth / 2).max(1))
        .set_max_variables(1024)
        .set_max_functions(256)
        .set_strict_variables(true)
        .disable_symbol("eval");
    engine.on_print(|_| {});
    engine.on_debug(|_, _, _| {});
    // Checking the clock every 64 operations keeps overshoot small and cost negligible.
    engine.on_progress(|operations| {
        (operations % 64 == 0 && context::deadline_passed()).then(|| Dynamic::from(DEADLINE))
    });
    script_api::register(&mut engine);
    engine
}

fn compile(engine: &Engine, rule_id: &str, source: &str) -> Result<AST, LoadError> {
    // `event` is declared (not as a constant, which the optimizer would fold) so strict
    // variables accept it; its real value arrives at run time.
    let mut scope = Scope::new();
    scope.push_dynamic("event", Dynamic::UNIT);
    engine
        .compile_with_scope(&scope, source)
        .map_err(|err| LoadError::Compile {
            rule_id: rule_id.to_string(),
            message: err.err_type().to_string(),
            line: err.position().line(),
            column: err.position().position(),
        })
}

/// Position of the first call to `function` in `ast` (direct or method-style).
fn find_call(ast: &AST, function: &str) -> Option<Position> {
    let mut found = None;
    ast.walk(&mut |path: &[ASTNode]| {
        let call = match path.last() {
            Some(ASTNode::Expr(Expr::FnCall(call, pos) | Expr::MethodCall(call, pos))) => {
                Some((call, *pos))
            }
            Some(ASTNode::Stmt(Stmt::FnCall(call, pos))) => Some((call, *pos)),
            _ => None,
        };
        match call {
            Some((call, pos)) if call.name == function => {
                found = Some(pos);
                false
            }
            _ => true,
        }
    });
    found
}

/// What the fast paths of a batch need.
struct Natively<'a> {
    enabled: bool,
    host: &'a HostData,
    /// How many event paths the fast paths have numbered.
    paths: usize,
    sample: &'a mut TimeSample,
}

/// Event paths the per-event cache holds on the stack; more go to the heap.
const PATHS_INLINE: usize = 64;

fn run_batch<'a, I>(
    rules: &mut [LoadedRule],
    by_kind: &FastMap<String, Vec<usize>>,
    any_kind: &[usize],
    natively: Natively<'_>,
    events: I,
    outcome: &mut BatchOutcome,
) where
    I: Iterator<Item = (usize, EventInput<'a>)>,
{
    let mut scope = Scope::new();
    // Of the current event's rules: those the fast path decided, those Rhai has to run (and
    // whether their fast path was tried first).
    let mut decided: Vec<usize> = Vec::new();
    let mut interpret: Vec<(usize, bool)> = Vec::new();
    // Strings the fast paths build for an event, dropped together before the next.
    let mut scratch = Bump::new();
    for (index, input) in events {
        scratch.reset();
        let event = match input {
            Ok(event) if event.is_map() => event,
            Ok(other) => {
                let other = other.into_dynamic();
                outcome.parse_errors.push(ParseError {
                    event_index: index,
                    message: format!("an event must be a JSON object, not {}", other.type_name()),
                });
                continue;
            }
            Err(message) => {
                outcome.parse_errors.push(ParseError {
                    event_index: index,
                    message,
                });
                continue;
            }
        };
        outcome.events += 1;
        let selected = event.with_kind(|kind| {
            kind.and_then(|k| by_kind.get(k))
                .map_or(any_kind, Vec::as_slice)
        });
        if selected.is_empty() {
            continue;
        }
        let timed = natively.sample.next().then(Instant::now);
        decided.clear();
        interpret.clear();
        // The event's time is parsed only if a window call or an interpreted rule needs it.
        let parsed_time = std::cell::OnceCell::new();
        let time = || *parsed_time.get_or_init(|| event.time());
        // Where each numbered path leads in this event, filled in as rules follow them: on
        // the stack for the usual number of paths (a `SmallVec` built the same array and then
        // copied it into itself).
        let inline = [const { Cell::new(Slot::Unknown) }; PATHS_INLINE];
        let spilled: Vec<Cell<Slot>>;
        let cache: &[Cell<Slot>] = match &event {
            Event::Json(_) if natively.enabled && natively.paths <= PATHS_INLINE => {
                &inline[..natively.paths]
            }
            Event::Json(_) if natively.enabled => {
                spilled = vec![Cell::new(Slot::Unknown); natively.paths];
                &spilled
            }
            _ => &[],
        };
        for &rule_index in selected {
            let Some(rule) = rules.get_mut(rule_index) else {
                continue;
            };
            let Some(fast) = rule.fast.as_ref().filter(|_| natively.enabled) else {
                interpret.push((rule_index, false));
                continue;
            };
            if let Event::Json(json) = &event {
                if fast.guard_returns(json, cache) {
                    rule.stats.evals += 1;
                    rule.stats.native += 1;
                    decided.push(rule_index);
                    continue;
                }
            }
            let side = Side {
                rule: rule_index,
                bounds: rule.limits.window_bounds(),
                can_enrich: rule.can_enrich,
                time: &time,
                scratch: &scratch,
            };
            let quiet = catch_unwind(AssertUnwindSafe(|| match &event {
                Event::Json(json) => fast.quiet(json, natively.host, &side, cache),
                Event::Value(value) => fast.quiet(value, natively.host, &side, cache),
            }))
            .unwrap_or(false);
            if quiet {
                // Rhai would have finished without an alert or a failure, and the window
                // calls it would have made are made.
                rule.stats.evals += 1;
                rule.stats.native += 1;
                decided.push(rule_index);
            } else {
                interpret.push((rule_index, true));
            }
        }
        // The native phase of a sampled event is timed once and shared equally by the rules
        // it ran: a clock read per rule (~25 ns, against ~50-100 ns for a fast path) was ~3%
        // of a batch.
        let tried = decided.len() + interpret.iter().filter(|(_, t)| *t).count();
        if let (Some(start), true) = (timed, tried > 0) {
            let share = nanos_between(start, Instant::now()).saturating_mul(TimeSample::EVERY)
                / tried as u64;
            let tried_rules = decided
                .iter()
                .copied()
                .chain(interpret.iter().filter(|(_, t)| *t).map(|(r, _)| *r));
            for rule_index in tried_rules {
                if let Some(rule) = rules.get_mut(rule_index) {
                    rule.stats.total_ns = rule.stats.total_ns.saturating_add(share);
                }
            }
        }
        if interpret.is_empty() {
            continue;
        }
        let time = time();
        context::update(|ctx| ctx.event_time = time);
        // Interpreted rules are all timed (and their deadlines start here).
        let mut clock = Instant::now();
        scope.clear();
        scope.push_constant_dynamic("event", event.into_dynamic());
        // One clock read per interpreted rule: each rule's end is the next rule's start.
        for &(rule_index, _) in &interpret {
            if let Some(rule) = rules.get_mut(rule_index) {
                evaluate_rule(rule, rule_index, index, &mut scope, &mut clock, outcome);
            }
            scope.rewind(1);
        }
        context::update(|ctx| {
            ctx.journal.clear();
            ctx.replayed = 0;
        });
    }
}

fn nanos_between(start: Instant, end: Instant) -> u64 {
    u64::try_from(end.duration_since(start).as_nanos()).unwrap_or(u64::MAX)
}

fn evaluate_rule(
    rule: &mut LoadedRule,
    rule_index: usize,
    event_index: usize,
    scope: &mut Scope,
    clock: &mut Instant,
    outcome: &mut BatchOutcome,
) {
    context::update(|ctx| {
        ctx.rule = rule_index;
        ctx.can_enrich = rule.can_enrich;
        ctx.bounds = rule.limits.window_bounds();
        ctx.max_emits = rule.limits.max_emits_per_event;
        ctx.emits.clear();
    });
    let started = *clock;
    context::set_deadline(started.checked_add(rule.limits.deadline()));
    let result = catch_unwind(AssertUnwindSafe(|| {
        run_rule(&rule.engine, &rule.ast, &mut rule.caches, scope)
    }));
    context::set_deadline(None);
    context::update(|ctx| context::skip_journal(ctx, rule_index));
    *clock = Instant::now();
    let elapsed = nanos_between(started, *clock);
    let emits = context::take_emits();

    rule.stats.evals += 1;
    rule.stats.total_ns = rule.stats.total_ns.saturating_add(elapsed);
    let failure = match result {
        Ok(Ok(())) => {
            rule.stats.matches += emits.len() as u64;
            for emitted in emits {
                let mut alert = rule.alert_defaults.clone();
                alert.extend(emitted);
                alert.insert("rule_id".into(), rule.id.as_str().into());
                outcome.matches.push(Match {
                    rule_id: rule.id.clone(),
                    event_index,
                    alert,
                });
            }
            return;
        }
        Ok(Err(err)) => describe_failure(&err, &rule.limits),
        Err(panic) => {
            // Whatever the unwind left half-done in the cache goes with it.
            rule.caches = Caches::new();
            (
                FailureKind::Panic,
                format!("internal error in the engine: {}", panic_message(&panic)),
                Position::NONE,
            )
        }
    };
    rule.stats.failures += 1;
    let (kind, message, pos) = failure;
    outcome.failures.push(Failure {
        rule_id: rule.id.clone(),
        event_index,
        kind,
        message,
        line: pos.line(),
        column: pos.position(),
    });
}

/// Maximum entries of a rule's function-resolution cache kept from one evaluation to the
/// next. A script calls a bounded set of functions, but dynamic calls (`Fn(name).call()`)
/// could add names without end.
const MAX_CACHED_RESOLUTIONS: usize = 512;

/// `Engine::run_ast_with_scope`, except that the rule's function-resolution cache lives on
/// between evaluations: Rhai otherwise starts every run with an empty one, so each call
/// (`!=`, `glob`, `split`...) is looked up again in the function tables on every event.
/// The cache maps call hashes (name and argument types) to functions of this rule's engine
/// and AST, which never change for a loaded rule. After a failed run (which may leave the
/// cache stack unbalanced) or when it grows large, the rule starts with an empty cache.
fn run_rule(
    engine: &Engine,
    ast: &AST,
    caches: &mut Caches,
    scope: &mut Scope,
) -> Result<(), Box<EvalAltResult>> {
    let mut global = engine.new_global_runtime_state();
    global.lib.push(ast.shared_lib().clone());
    #[allow(deprecated)]
    let result = engine.eval_statements_raw(&mut global, caches, scope, ast.statements());
    let levels = caches.fn_resolution_caches_len();
    if result.is_err()
        || levels > 1
        || (levels == 1 && caches.fn_resolution_cache_mut().dict.len() > MAX_CACHED_RESOLUTIONS)
    {
        *caches = Caches::new();
    }
    result.map(|_| ())
}

/// Turn a Rhai error into (kind, message for people, position in the rule's source).
fn describe_failure(err: &EvalAltResult, limits: &Limits) -> (FailureKind, String, Position) {
    let inner = err.unwrap_inner();
    let pos = if inner.position().is_none() {
        err.position()
    } else {
        inner.position()
    };
    let (kind, message) = match inner {
        EvalAltResult::ErrorTooManyOperations(..) => (
            FailureKind::Limit,
            format!(
                "stopped after {} operations (max_operations)",
                limits.max_operations
            ),
        ),
        EvalAltResult::ErrorStackOverflow(..) => (
            FailureKind::Limit,
            format!(
                "function calls nested deeper than {} (max_call_levels)",
                limits.max_call_levels
            ),
        ),
        EvalAltResult::ErrorDataTooLarge(what, ..) => {
            // Rhai names the value: "Length of string", "Size of array/BLOB", "Size of object map".
            let (limit, value) = if what.contains("string") {
                ("max_string_size", limits.max_string_size)
            } else if what.contains("array") {
                ("max_array_size", limits.max_array_size)
            } else {
                ("max_map_size", limits.max_map_size)
            };
            (
                FailureKind::Limit,
                format!("{what} grew past {value} ({limit})"),
            )
        }
        EvalAltResult::ErrorTooManyVariables(..) => (
            FailureKind::Limit,
            "too many variables in scope".to_string(),
        ),
        EvalAltResult::ErrorTerminated(token, ..) => {
            match token.clone().into_immutable_string().as_deref() {
                Ok(EMIT_LIMIT) => (
                    FailureKind::Limit,
                    format!(
                        "emitted more than {} alerts for one event (max_emits_per_event)",
                        limits.max_emits_per_event
                    ),
                ),
                Ok(CAPABILITY) => (
                    FailureKind::Capability,
                    "enrich() needs capability 'enrich', which this rule is not granted"
                        .to_string(),
                ),
                Ok(DEADLINE) => (
                    FailureKind::Limit,
                    format!(
                        "ran longer than {} ms on one event (deadline_ms)",
                        limits.deadline_ms
                    ),
                ),
                _ => (FailureKind::Limit, "stopped by the engine".to_string()),
            }
        }
        other => (FailureKind::Runtime, without_position(other)),
    };
    (kind, message, pos)
}

/// Rhai appends " (line L, position C)" to messages; positions are reported separately.
fn without_position(err: &EvalAltResult) -> String {
    let text = err.to_string();
    let pos = err.position();
    if pos.is_none() {
        return text;
    }
    let suffix = format!(" ({pos})");
    text.strip_suffix(&suffix)
        .map_or(text.clone(), str::to_string)
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, source: &str) -> RuleSpec {
        RuleSpec {
            id: id.into(),
            source: source.into(),
            ..RuleSpec::default()
        }
    }

    fn engine_with(rules: &[(&str, &str)]) -> RuleEngine {
        let mut engine = RuleEngine::new(Limits::default()).expect("default limits");
        engine
            .replace_all(rules.iter().map(|(id, src)| spec(id, src)).collect())
            .expect("rules compile");
        engine
    }

    const EVENT: &[u8] =
        br#"{"kind":"proc","ts":"2026-12-03T08:00:00Z","proc":{"exe":"/usr/bin/curl","pid":7}}"#;

    #[test]
    fn emit_uses_defaults_and_overrides() {
        let mut engine = engine_with(&[(
            "r1",
            r#"if event.proc.exe == "/usr/bin/curl" { emit(#{title: "curl", extra: 1}); }"#,
        )]);
        let out = engine.evaluate_jsonl(EVENT);
        assert_eq!(out.events, 1);
        assert_eq!(out.matches.len(), 1, "{out:?}");
        let alert = &out.matches[0].alert;
        assert_eq!(
            alert["title"].clone().into_string().ok().as_deref(),
            Some("curl")
        );
        assert_eq!(
            alert["severity"].clone().into_string().ok().as_deref(),
            Some("medium")
        );
        assert_eq!(
            alert["rule_id"].clone().into_string().ok().as_deref(),
            Some("r1")
        );
        assert_eq!(alert["extra"].as_int(), Ok(1));
    }

    #[test]
    fn infinite_loop_is_a_limit_failure_and_next_rule_runs() {
        let mut engine = engine_with(&[("spin", "while true {}"), ("ok", "emit();")]);
        let started = Instant::now();
        let out = engine.evaluate_jsonl(EVENT);
        assert!(started.elapsed().as_millis() < 100);
        assert_eq!(out.failures.len(), 1, "{out:?}");
        assert_eq!(out.failures[0].kind, FailureKind::Limit);
        assert_eq!(out.matches.len(), 1);
        assert_eq!(out.matches[0].rule_id, "ok");
    }

    #[test]
    fn rules_cannot_mutate_the_shared_event() {
        let attempts = [
            r#"event.proc.exe = "x";"#,
            r#"event.proc.remove("exe");"#,
            r#"event.proc.clear();"#,
            r#"event.kind += "x";"#,
            r#"event.proc.exe.clear();"#,
            r#"event.proc.exe.pad(100, "x");"#,
            r#"event = 1;"#,
            r#"let p = event.proc; p.exe = "x";"#,
            r#"mixin(event.proc, #{exe: "x"});"#,
        ];
        for attempt in attempts {
            let mut engine = engine_with(&[
                ("mutate", attempt),
                (
                    "check",
                    r#"if event.proc.exe == "/usr/bin/curl" && event.kind == "proc" { emit(); }"#,
                ),
            ]);
            let out = engine.evaluate_jsonl(EVENT);
            assert_eq!(out.matches.len(), 1, "{attempt}: {out:?}");
            assert_eq!(out.matches[0].rule_id, "check", "{attempt}");
        }
    }

    #[test]
    fn enrich_needs_the_capability() {
        let mut engine = RuleEngine::new(Limits::default()).expect("limits");
        let err = engine
            .load(spec("e", "\nlet x = enrich(\"host\", \"h1\");"))
            .expect_err("no capability");
        match err {
            LoadError::Compile { line, message, .. } => {
                assert_eq!(line, Some(2));
                assert!(message.contains("capability 'enrich'"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // Calling it indirectly is stopped at run time.
        engine
            .load(spec("e", r#"let f = Fn("enrich"); f.call("host", "h1");"#))
            .expect("compiles");
        let out = engine.evaluate_jsonl(EVENT);
        assert_eq!(out.failures.len(), 1, "{out:?}");
        assert_eq!(out.failures[0].kind, FailureKind::Capability, "{out:?}");
    }

    #[test]
    fn windows_count_by_event_time_across_batches() {
        let mut engine = engine_with(&[(
            "w",
            r#"window_push("k"); if window_count("k", 60) >= 3 { emit(); }"#,
        )]);
        let line = |t: &str| format!(r#"{{"kind":"auth","ts":"2026-12-03T08:{t}Z"}}"#);
        let first = format!("{}\n{}", line("00:00"), line("00:30"));
        assert!(engine.evaluate_jsonl(first.as_bytes()).matches.is_empty());
        let out = engine.evaluate_jsonl(line("00:59").as_bytes());
        assert_eq!(out.matches.len(), 1, "{out:?}");
        let out = engine.evaluate_jsonl(line("02:00").as_bytes());
        assert!(out.matches.is_empty());
    }

    #[test]
    fn membership_overloads_agree_with_rhai_equality() {
        // `x in [...]` runs our exact-type `contains` overloads for string and integer
        // needles; Rhai's own `contains` (the standard package alone) is the reference.
        let ours = build_engine(Limits::default().engine_limits());
        let mut reference = Engine::new_raw();
        reference.register_global_module(standard_package());
        let needles = [
            r#""a""#,
            r#""ab""#,
            r#""""#,
            "4",
            "0",
            "-3",
            "9007199254740993",
        ];
        let items = [
            r#""a""#,
            "'a'",
            r#""ab""#,
            r#""""#,
            "4",
            "4.0",
            "4.000000000000001",
            "0.0",
            "-0.0",
            "-3",
            "9007199254740992.0",
            "()",
            "true",
            "#{a: 1}",
            "[4]",
            "'b'",
        ];
        for needle in needles {
            for item in items {
                let script = format!("{needle} in [{item}]");
                let expected: bool = reference.eval(&script).expect("reference runs");
                assert_eq!(ours.eval::<bool>(&script).ok(), Some(expected), "{script}");
            }
            let all = format!("{needle} in [{}]", items.join(", "));
            let expected: bool = reference.eval(&all).expect("reference runs");
            assert_eq!(ours.eval::<bool>(&all).ok(), Some(expected), "{all}");
            let empty = format!("{needle} in []");
            assert_eq!(ours.eval::<bool>(&empty).ok(), Some(false), "{empty}");
        }
        // A constant array and the negated form go through the same overloads.
        let script = r#"const A = ["x", "y"]; ("y" in A) && !("z" in A) && "z" !in A"#;
        assert_eq!(ours.eval::<bool>(script).ok(), Some(true));
    }

    #[test]
    fn kept_function_cache_survives_script_functions_and_failures() {
        // The function-resolution cache outlives each run; script functions push and pop
        // cache levels, and a failure mid-function resets it. Results must not drift.
        let mut engine = engine_with(&[(
            "f",
            r#"
            fn name_of(path) { let parts = path.split("/"); parts[parts.len() - 1] }
            fn check(pid) { if pid == 0 { throw "pid 0"; } pid }
            if check(event.proc.pid) > 0 && name_of(event.proc.exe) in ["curl", "wget"] {
                emit(#{context: #{name: name_of(event.proc.exe)}});
            }
            "#,
        )]);
        let line = |exe: &str, pid: i64| {
            format!(
                r#"{{"kind":"proc","ts":"2026-12-03T08:00:00Z","proc":{{"exe":"{exe}","pid":{pid}}}}}"#
            )
        };
        for _ in 0..3 {
            let batch = [
                line("/usr/bin/curl", 1),
                line("/usr/bin/ls", 2),
                line("/usr/bin/wget", 0),
                line("/usr/bin/wget", 3),
            ]
            .join("\n");
            let out = engine.evaluate_jsonl(batch.as_bytes());
            let matched: Vec<usize> = out.matches.iter().map(|m| m.event_index).collect();
            assert_eq!(matched, vec![0, 3], "{out:?}");
            assert_eq!(out.failures.len(), 1, "{out:?}");
            assert_eq!(out.failures[0].event_index, 2);
            assert_eq!(out.failures[0].kind, FailureKind::Runtime);
            assert_eq!(out.failures[0].line, Some(3), "{out:?}");
        }
    }

    #[test]
    fn eval_and_print_are_unavailable() {
        let mut engine = RuleEngine::new(Limits::default()).expect("limits");
        assert!(engine.load(spec("e", r#"eval("1")"#)).is_err());
        engine
            .load(spec("p", r#"print("x"); debug("y"); emit();"#))
            .expect("print is a no-op");
        assert_eq!(engine.evaluate_jsonl(EVENT).matches.len(), 1);
    }

    #[test]
    fn about_one_event_in_eight_is_timed() {
        let mut sample = TimeSample::default();
        let timed = (0..80_000).filter(|_| sample.next()).count();
        assert!((9_000..11_000).contains(&timed), "{timed} of 80,000 timed");
        // Not in step with a short period: every residue of a stride of 8 is timed.
        let mut by_residue = [0usize; 8];
        for i in 0..80_000 {
            if sample.next() {
                by_residue[i % 8] += 1;
            }
        }
        assert!(by_residue.iter().all(|&n| n > 1_000), "{by_residue:?}");
    }

    #[test]
    fn a_batch_past_the_arena_size_is_one_batch() {
        let rules = [
            (
                "curl",
                r#"if event.proc.exe == "/usr/bin/curl" { emit(#{n: event.proc.pid}); }"#,
            ),
            // Crosses its threshold in the second part: windows carry over between parts.
            (
                "count",
                r#"let even = event.proc.pid % 2 == 0;
                   if even { window_push("even"); }
                   let n = window_count("even", 3600);
                   if even && n == 600 { emit(#{n: n}); }"#,
            ),
        ];
        let mut lines = Vec::new();
        for i in 0..(2 * ARENA_EVENTS + 500) {
            lines.push(match i % 97 {
                13 => String::new(),
                29 => "{oops".to_string(),
                _ => format!(
                    r#"{{"kind":"proc","ts":"2026-12-03T08:00:00Z","proc":{{"exe":"{}","pid":{i}}}}}"#,
                    if i % 7 == 0 { "/usr/bin/curl" } else { "/bin/ls" }
                ),
            });
        }
        let whole = engine_with(&rules).evaluate_jsonl(lines.join("\n").as_bytes());
        let mut one_by_one = engine_with(&rules);
        let mut expected = BatchOutcome::default();
        for (i, line) in lines.iter().enumerate() {
            let mut out = one_by_one.evaluate_jsonl(line.as_bytes());
            out.matches.iter_mut().for_each(|m| m.event_index = i);
            out.parse_errors.iter_mut().for_each(|e| e.event_index = i);
            expected.absorb(out);
        }
        let summary = |o: &BatchOutcome| {
            let matches: Vec<_> = o
                .matches
                .iter()
                .map(|m| (m.rule_id.clone(), m.event_index, m.alert["n"].to_string()))
                .collect();
            let errors: Vec<_> = o.parse_errors.iter().map(|e| e.event_index).collect();
            (o.events, matches, errors)
        };
        assert_eq!(summary(&whole), summary(&expected));
        let counted: Vec<_> = whole
            .matches
            .iter()
            .filter(|m| m.rule_id == "count")
            .collect();
        assert!(
            matches!(counted[..], [m] if m.event_index > ARENA_EVENTS),
            "{counted:?}"
        );
        assert!(whole.events > 2 * ARENA_EVENTS);
    }

    #[test]
    fn the_arena_is_reused_from_batch_to_batch() {
        let mut engine = engine_with(&[("r1", r#"if event.proc.exe == "/nope" { emit(); }"#)]);
        let batch = vec![EVENT; 3 * ARENA_EVENTS].join(&b'\n');
        let sizes: Vec<usize> = (0..4)
            .map(|_| {
                assert_eq!(engine.evaluate_jsonl(&batch).events, 3 * ARENA_EVENTS);
                engine.arena.allocated_bytes()
            })
            .collect();
        assert!(sizes[1..].iter().all(|&s| s == sizes[1]), "{sizes:?}");
        // What one part of a batch needs, not what the whole batch would.
        assert!(sizes[1] < 3 * ARENA_EVENTS * 100, "{sizes:?}");
    }
}
