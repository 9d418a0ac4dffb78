//! Promotion conditions: CEL expressions, checked for size and nesting before they are
//! compiled, compiled once when the program is saved, evaluated per journal (or line).
//!
//! The CEL parser recurses once per nesting level and a stack overflow aborts the process,
//! so a source is refused before parsing when it is longer than [`MAX_SOURCE`] or nests
//! deeper than [`MAX_NESTING`], and parsing runs on a thread with a stack large enough for
//! anything those limits let through (debug builds use many times the stack of release).
//! CEL is not Turing-complete; comprehensions (`all`, `exists`, `map`, `filter`…) are the
//! only loops. On the parsed tree, at most [`MAX_COMPREHENSIONS`] may appear, nested at
//! most [`MAX_COMPREHENSION_DEPTH`] deep. Each condition also gets a cost bound when it is
//! compiled: a polynomial in the size of the largest list the evaluation can see (the
//! journal's lines, a list in its attributes or the member's profile). Before evaluating,
//! the bound for the journal at hand is compared with [`EVALUATION_BUDGET`]; a condition
//! that could cost more is not run at all but answered as an evaluation error — so no
//! operator-written rule can hold the write lock, and journals of other programs, for
//! long.

use std::fmt;
use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr};
use cel::{Context, Env, Value};

use super::native::{self, Names, Native};
use crate::program::Currency;

/// The longest condition accepted, in bytes.
pub const MAX_SOURCE: usize = 4_096;
/// The deepest nesting of brackets accepted.
pub const MAX_NESTING: usize = 32;
/// The most comprehension macros a condition may use.
pub const MAX_COMPREHENSIONS: usize = 3;
/// How deep comprehensions may nest (a comprehension in another's body is depth 2).
pub const MAX_COMPREHENSION_DEPTH: usize = 2;
/// The most evaluation steps (expression nodes visited) one condition may cost on one
/// journal, line-scope conditions counting every line: measured, about 10 ms (see the
/// test `a_condition_at_the_budget_evaluates_in_bounded_time`).
pub const EVALUATION_BUDGET: u64 = 200_000;
/// The stack the parser gets. Measured: nesting 32 needs well under 8 MiB in a debug build.
const PARSER_STACK: usize = 64 << 20;

/// The standard library every condition is compiled and run with.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// A compiled condition.
#[derive(Clone)]
pub struct Condition {
    source: Arc<str>,
    program: Arc<cel::Program>,
    /// The same condition on the fast path, when it has that shape.
    pub(crate) native: Option<Arc<Native>>,
    /// Steps one evaluation may take, as a polynomial in the widest list it can see.
    cost: Poly,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Condition").field(&self.source).finish()
    }
}

/// Why a condition was refused, and where (1-based line and column, when known).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}{}", position.map(|(l, c)| format!(" (line {l}, column {c})")).unwrap_or_default())]
pub struct ExpressionError {
    pub message: String,
    pub position: Option<(usize, usize)>,
}

impl ExpressionError {
    fn at(message: impl Into<String>, position: Option<(usize, usize)>) -> Self {
        Self {
            message: message.into(),
            position,
        }
    }
}

impl Condition {
    /// Checks `source` against the limits, then compiles it.
    pub fn compile(source: &str) -> Result<Self, ExpressionError> {
        check_limits(source)?;
        let owned = source.to_owned();
        let parsed = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("cel-compile".into())
                .stack_size(PARSER_STACK)
                .spawn_scoped(scope, move || ENV.compile(&owned).map_err(first_error))
                .map_err(|e| ExpressionError::at(format!("cannot start the compiler: {e}"), None))?
                .join()
                .map_err(|_| ExpressionError::at("the expression could not be compiled", None))?
        })?;
        let tree = &parsed.expression().expr;
        let comprehensions = count_comprehensions(tree);
        if comprehensions > MAX_COMPREHENSIONS {
            return Err(ExpressionError::at(
                format!(
                    "the condition uses {comprehensions} comprehensions (all, exists, map, filter…); at most {MAX_COMPREHENSIONS} are allowed"
                ),
                None,
            ));
        }
        let depth = comprehension_depth(tree);
        if depth > MAX_COMPREHENSION_DEPTH {
            return Err(ExpressionError::at(
                format!(
                    "the condition nests comprehensions {depth} deep; at most {MAX_COMPREHENSION_DEPTH} are allowed"
                ),
                None,
            ));
        }
        let cost = cost(tree);
        Ok(Self {
            source: source.into(),
            program: Arc::new(parsed),
            native: None,
            cost,
        })
    }

    /// The most steps one evaluation can take when no list it sees is longer than
    /// `widest` (saturating).
    pub fn cost_bound(&self, widest: usize) -> u64 {
        self.cost.at(widest as u64)
    }

    /// Compiles the fast path where the condition has its shape (see [`super::native`]):
    /// member balances name `currencies`, and `line` is the current line in line scope.
    pub(crate) fn with_fast_path(mut self, currencies: &[Currency], line_scope: bool) -> Self {
        let names = Names {
            currencies,
            line: line_scope.then_some("line"),
        };
        self.native = native::compile(self.program.expression(), &names).map(Arc::new);
        self
    }

    /// Whether the condition reads the member's profile or enrolment (through the
    /// interpreter; the fast path reads only balances).
    pub fn reads_member_facts(&self) -> bool {
        match &self.native {
            Some(native) => native.needs_member_facts(),
            None => self.program.references().has_variable("member"),
        }
    }

    /// Whether the condition runs on the fast path.
    pub fn is_fast(&self) -> bool {
        self.native.is_some()
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The data the condition reads, as paths (`journal.amount`, `local.weekday`,
    /// `member.tiers.status`, `line.category`), each once, in the order they appear: what a
    /// dry run shows the values of when the condition does not hold.
    pub fn paths(&self) -> Vec<String> {
        fn path(expr: &Expr) -> Option<String> {
            match expr {
                Expr::Ident(name) => Some(name.clone()),
                Expr::Select(select) if !select.test => {
                    Some(format!("{}.{}", path(&select.operand.expr)?, select.field))
                }
                _ => None,
            }
        }
        fn walk(expr: &Expr, out: &mut Vec<String>) {
            if let Expr::Select(_) = expr
                && let Some(p) = path(expr)
            {
                if !out.contains(&p) {
                    out.push(p);
                }
                return;
            }
            for child in children(expr) {
                walk(child, out);
            }
        }
        let mut out = Vec::new();
        walk(&self.program.expression().expr, &mut out);
        out.truncate(8);
        out
    }

    /// The fields the condition reads directly off the variable `member` (`member.spend_90d`
    /// gives `spend_90d`), each once, in the order they appear.
    pub fn member_fields(&self) -> Vec<String> {
        fn walk(expr: &Expr, out: &mut Vec<String>) {
            if let Expr::Select(select) = expr
                && let Expr::Ident(name) = &select.operand.expr
                && name == "member"
            {
                if !out.contains(&select.field) {
                    out.push(select.field.clone());
                }
                return;
            }
            for child in children(expr) {
                walk(child, out);
            }
        }
        let mut out = Vec::new();
        walk(&self.program.expression().expr, &mut out);
        out
    }

    /// The expression's value in `context` (a dry run shows what a condition read).
    pub(crate) fn value(&self, context: &Context<'_, '_>) -> Result<Value, String> {
        self.program.execute(context).map_err(|e| e.to_string())
    }

    /// Evaluates the condition in `context`: `Ok(true)` when it holds; an error (a missing
    /// field, a type mismatch, a result that is not a boolean) is reported as text.
    pub fn holds(&self, context: &Context<'_, '_>) -> Result<bool, String> {
        match self.program.execute(context) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "the condition gave {:?}, not true or false",
                other.type_of()
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// A fresh evaluation context with the standard library.
pub fn context<'a>() -> Context<'a, 'static> {
    Context::with_env(Arc::clone(&ENV))
}

fn first_error(errors: cel::ParseErrors) -> ExpressionError {
    match errors.errors.first() {
        Some(e) => {
            let (line, column) = e.pos;
            // The parser counts both from 1.
            let position = (line >= 1 && column >= 1).then_some((line as usize, column as usize));
            ExpressionError::at(e.msg.clone(), position)
        }
        None => ExpressionError::at("the expression could not be parsed", None),
    }
}

/// Refuses sources the parser should never see: too long, too deeply nested, too many
/// comprehensions. Brackets inside string literals do not count.
fn check_limits(source: &str) -> Result<(), ExpressionError> {
    if source.trim().is_empty() {
        return Err(ExpressionError::at("the condition is empty", None));
    }
    if source.len() > MAX_SOURCE {
        return Err(ExpressionError::at(
            format!(
                "the condition is {} bytes long; at most {MAX_SOURCE} are allowed",
                source.len()
            ),
            None,
        ));
    }
    let (mut depth, mut line, mut column) = (0usize, 1usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for ch in source.chars() {
        column += 1;
        if ch == '\n' {
            line += 1;
            column = 0;
        }
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == q {
                quote = None;
            }
            continue;
        }
        match ch {
            '\'' | '"' => quote = Some(ch),
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(ExpressionError::at(
                        format!("the condition nests deeper than {MAX_NESTING} levels"),
                        Some((line, column)),
                    ));
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    // Unary operators nest like brackets in the parser: `!!!!…x`, `----…1`.
    let unary_run = longest_unary_run(source);
    if unary_run > MAX_NESTING {
        return Err(ExpressionError::at(
            format!("the condition chains more than {MAX_NESTING} unary operators"),
            None,
        ));
    }
    Ok(())
}

/// A polynomial with saturating coefficients: `c[0] + c[1]·n + c[2]·n² + …`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Poly(Vec<u64>);

impl Poly {
    fn constant(c: u64) -> Self {
        Self(vec![c])
    }

    /// `n`: a list from the evaluation's data.
    fn n() -> Self {
        Self(vec![0, 1])
    }

    fn add(mut self, other: &Self) -> Self {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a = a.saturating_add(*b);
        }
        self
    }

    fn mul(&self, other: &Self) -> Self {
        let mut out = vec![0u64; (self.0.len() + other.0.len()).saturating_sub(1).max(1)];
        for (i, a) in self.0.iter().enumerate() {
            for (j, b) in other.0.iter().enumerate() {
                out[i + j] = out[i + j].saturating_add(a.saturating_mul(*b));
            }
        }
        Self(out)
    }

    fn at(&self, n: u64) -> u64 {
        self.0
            .iter()
            .rev()
            .fold(0u64, |acc, c| acc.saturating_mul(n).saturating_add(*c))
    }
}

fn children(expr: &Expr) -> Vec<&Expr> {
    match expr {
        Expr::Call(call) => call
            .target
            .iter()
            .map(|t| &t.expr)
            .chain(call.args.iter().map(|a| &a.expr))
            .collect(),
        Expr::Comprehension(c) => vec![
            &c.iter_range.expr,
            &c.accu_init.expr,
            &c.loop_cond.expr,
            &c.loop_step.expr,
            &c.result.expr,
        ],
        Expr::List(list) => list.elements.iter().map(|e| &e.expr).collect(),
        Expr::Map(map) => map
            .entries
            .iter()
            .flat_map(|e| entry_children(&e.expr))
            .collect(),
        Expr::Struct(st) => st
            .entries
            .iter()
            .flat_map(|e| entry_children(&e.expr))
            .collect(),
        Expr::Select(select) => vec![&select.operand.expr],
        Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => Vec::new(),
    }
}

fn entry_children(entry: &EntryExpr) -> Vec<&Expr> {
    match entry {
        EntryExpr::StructField(f) => vec![&f.value.expr],
        EntryExpr::MapEntry(e) => vec![&e.key.expr, &e.value.expr],
    }
}

fn count_comprehensions(expr: &Expr) -> usize {
    usize::from(matches!(expr, Expr::Comprehension(_)))
        + children(expr)
            .into_iter()
            .map(count_comprehensions)
            .sum::<usize>()
}

/// How deep comprehensions nest in their bodies (a comprehension in another's range runs
/// before it, once: it does not nest).
fn comprehension_depth(expr: &Expr) -> usize {
    match expr {
        Expr::Comprehension(c) => {
            let body = [&c.loop_cond.expr, &c.loop_step.expr]
                .into_iter()
                .map(comprehension_depth)
                .max()
                .unwrap_or(0);
            let outside = [&c.iter_range.expr, &c.accu_init.expr, &c.result.expr]
                .into_iter()
                .map(comprehension_depth)
                .max()
                .unwrap_or(0);
            (1 + body).max(outside)
        }
        other => children(other)
            .into_iter()
            .map(comprehension_depth)
            .max()
            .unwrap_or(0),
    }
}

/// How many elements a list-valued expression can have, in terms of `n`, the longest
/// list in the evaluation's data: a literal has its own; a concatenation the sum; a
/// `map`/`filter` result its range's; anything else read from the data, `n` (plus what
/// its arguments could add).
fn size(expr: &Expr) -> Poly {
    match expr {
        Expr::List(list) => Poly::constant(list.elements.len() as u64),
        Expr::Comprehension(c) => size(&c.iter_range.expr),
        Expr::Call(call) if call.func_name == "_+_" => children(expr)
            .into_iter()
            .map(size)
            .fold(Poly::default(), |acc, p| acc.add(&p)),
        Expr::Call(_) => children(expr)
            .into_iter()
            .map(size)
            .fold(Poly::n(), |acc, p| acc.add(&p)),
        _ => Poly::n(),
    }
}

/// The steps an evaluation of `expr` can take: one per node, a comprehension's body once
/// per element of its range.
fn cost(expr: &Expr) -> Poly {
    match expr {
        Expr::Comprehension(c) => {
            let body = cost(&c.loop_cond.expr).add(&cost(&c.loop_step.expr));
            Poly::constant(1)
                .add(&cost(&c.iter_range.expr))
                .add(&cost(&c.accu_init.expr))
                .add(&cost(&c.result.expr))
                .add(&size(&c.iter_range.expr).mul(&body))
        }
        other => children(other)
            .into_iter()
            .map(cost)
            .fold(Poly::constant(1), |acc, p| acc.add(&p)),
    }
}

/// The longest run of `!` and `-` (ignoring spaces), each of which is a level of recursion
/// in the parser.
fn longest_unary_run(source: &str) -> usize {
    let (mut longest, mut run) = (0, 0);
    for ch in source.chars() {
        match ch {
            '!' | '-' => {
                run += 1;
                longest = longest.max(run);
            }
            c if c.is_whitespace() || c == '(' => {}
            _ => run = 0,
        }
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_conditions_compile_and_evaluate() {
        let c = Condition::compile("x > 2 && name in ['a', 'b']").expect("the condition compiles");
        let mut ctx = context();
        ctx.add_variable_from_value("x", 3i64);
        ctx.add_variable_from_value("name", "b");
        assert_eq!(c.holds(&ctx), Ok(true));
        ctx.add_variable_from_value("x", 1i64);
        assert_eq!(c.holds(&ctx), Ok(false));
    }

    #[test]
    fn a_syntax_error_has_its_position() {
        let e = Condition::compile("x > 2 &&\n  y ==").unwrap_err();
        assert_eq!(e.position, Some((2, 7)), "{e}");
        let e = Condition::compile("x >> 2").unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(1), "{e}");
    }

    #[test]
    fn hostile_sources_are_refused_before_parsing() {
        let long = format!("x == '{}'", "a".repeat(10_000));
        assert!(
            Condition::compile(&long)
                .unwrap_err()
                .message
                .contains("bytes long")
        );
        let deep = format!("{}x{}", "(".repeat(1_000), ")".repeat(1_000));
        assert!(
            Condition::compile(&deep)
                .unwrap_err()
                .message
                .contains("nests deeper")
        );
        let list = format!("x in [{}]", vec!["1"; 100_000].join(","));
        assert!(Condition::compile(&list).is_err());
        let nots = format!("{}true", "!".repeat(1_000));
        assert!(
            Condition::compile(&nots)
                .unwrap_err()
                .message
                .contains("unary")
        );
        // Brackets inside strings are text, not nesting.
        assert!(Condition::compile(&format!("x == '{}'", "(".repeat(100))).is_ok());
    }

    #[test]
    fn the_deepest_allowed_nesting_compiles_and_runs_on_a_small_stack() {
        let deep = format!(
            "{}1{} == 1",
            "(".repeat(MAX_NESTING),
            ")".repeat(MAX_NESTING)
        );
        let c = Condition::compile(&deep).expect("the condition compiles");
        // Evaluation runs on the caller's stack: a Tokio worker has 2 MiB.
        let result = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || c.holds(&context()))
            .expect("the evaluating thread starts")
            .join()
            .expect("the evaluation does not panic");
        assert_eq!(result, Ok(true));
    }

    #[test]
    fn comprehensions_are_counted_and_nested_on_the_parsed_tree() {
        // A space before the bracket fooled the text match this replaced.
        let three_deep = "journal.lines.exists (a, journal.lines.exists (b, journal.lines.exists (c, a == b && b == c)))";
        let e = Condition::compile(three_deep).unwrap_err();
        assert!(e.message.contains("nests comprehensions 3 deep"), "{e}");
        let two_deep = "journal.lines.exists(a, journal.lines.exists(b, a == b))";
        assert!(Condition::compile(two_deep).is_ok());
        // In sequence, not nested: a map's result is the next one's range.
        let chained = "journal.lines.map(l, l.quantity).filter(q, q > 1).exists(q, q > 5)";
        assert!(Condition::compile(chained).is_ok());
        let four =
            "[1].all(a, a > 0) && [1].all(b, b > 0) && [1].all(c, c > 0) && [1].all(d, d > 0)";
        assert!(
            Condition::compile(four)
                .unwrap_err()
                .message
                .contains("4 comprehensions")
        );
    }

    #[test]
    fn the_cost_bound_grows_with_the_lists_as_the_loops_nest() {
        let flat = Condition::compile("journal.amount > 10.0").expect("the condition compiles");
        assert_eq!(
            flat.cost_bound(1),
            flat.cost_bound(1_000),
            "no loop: no growth"
        );
        let one = Condition::compile("journal.lines.exists(l, l.category == 'shoes')")
            .expect("the condition compiles");
        let two =
            Condition::compile("journal.lines.exists(a, journal.lines.exists(b, a.sku == b.sku))")
                .expect("the condition compiles");
        assert!(
            one.cost_bound(1_000) < EVALUATION_BUDGET,
            "{}",
            one.cost_bound(1_000)
        );
        assert!(one.cost_bound(2_000) > one.cost_bound(1_000));
        assert!(
            two.cost_bound(50) < EVALUATION_BUDGET,
            "{}",
            two.cost_bound(50)
        );
        assert!(
            two.cost_bound(280) > EVALUATION_BUDGET,
            "{}",
            two.cost_bound(280)
        );
        // A list literal counts its own items; concatenation adds.
        let literal =
            Condition::compile("[1, 2, 3].exists(x, x == 2)").expect("the condition compiles");
        assert_eq!(literal.cost_bound(1), literal.cost_bound(1_000_000));
        let doubled =
            Condition::compile("(journal.lines + journal.lines).exists(l, l.quantity > 1)")
                .expect("the condition compiles");
        assert!(doubled.cost_bound(100) > one.cost_bound(100));
    }

    /// The bound is honest: evaluating a condition at the budget takes a bounded time
    /// (generously bounded here; a debug build is many times slower than release).
    #[test]
    fn a_condition_at_the_budget_evaluates_in_bounded_time() {
        let c = Condition::compile("xs.exists(a, xs.exists(b, a == b + 1000000))")
            .expect("the condition compiles");
        let n = (1..2_000)
            .take_while(|n| c.cost_bound(*n) <= EVALUATION_BUDGET)
            .last()
            .expect("some list length fits the budget");
        let mut ctx = context();
        ctx.add_variable_from_value("xs", (0..n as i64).collect::<Vec<_>>());
        let started = std::time::Instant::now();
        assert_eq!(c.holds(&ctx), Ok(false));
        let took = started.elapsed();
        eprintln!("{n} items, bound {}, took {took:?}", c.cost_bound(n));
        assert!(took < std::time::Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn run_time_errors_are_reported_not_raised() {
        let c = Condition::compile("journal.category == 'shoes'").expect("the condition compiles");
        let mut ctx = context();
        ctx.add_variable_from_value("journal", std::collections::HashMap::<String, i64>::new());
        assert!(c.holds(&ctx).is_err());
        let not_bool = Condition::compile("1 + 1").expect("the condition compiles");
        assert!(
            not_bool
                .holds(&context())
                .unwrap_err()
                .contains("not true or false")
        );
    }
}
