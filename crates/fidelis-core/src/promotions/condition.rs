//! Promotion conditions: CEL expressions, checked for size and nesting before they are
//! compiled, compiled once when the program is saved, evaluated per journal (or line).
//!
//! The CEL parser recurses once per nesting level and a stack overflow aborts the process,
//! so a source is refused before parsing when it is longer than [`MAX_SOURCE`] or nests
//! deeper than [`MAX_NESTING`], and parsing runs on a thread with a stack large enough for
//! anything those limits let through (debug builds use many times the stack of release).
//! CEL is not Turing-complete; comprehensions (`all`, `exists`, `map`, `filter`…) are the
//! only loops, and at most [`MAX_COMPREHENSIONS`] may appear, so evaluation is bounded by
//! the journal's size (at most 1,000 lines).

use std::fmt;
use std::sync::{Arc, LazyLock};

use cel::{Context, Env, Value};

use super::native::{self, Names, Native};
use crate::program::Currency;

/// The longest condition accepted, in bytes.
pub const MAX_SOURCE: usize = 4_096;
/// The deepest nesting of brackets accepted.
pub const MAX_NESTING: usize = 32;
/// The most comprehension macros a condition may use.
pub const MAX_COMPREHENSIONS: usize = 3;
/// The stack the parser gets. Measured: nesting 32 needs well under 8 MiB in a debug build.
const PARSER_STACK: usize = 64 << 20;
const COMPREHENSIONS: [&str; 6] = [
    ".all(",
    ".exists(",
    ".exists_one(",
    ".map(",
    ".filter(",
    ".existsOne(",
];

/// The standard library every condition is compiled and run with.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// A compiled condition.
#[derive(Clone)]
pub struct Condition {
    source: Arc<str>,
    program: Arc<cel::Program>,
    /// The same condition on the fast path, when it has that shape.
    pub(crate) native: Option<Arc<Native>>,
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
        Ok(Self {
            source: source.into(),
            program: Arc::new(parsed),
            native: None,
        })
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
            let position = (line >= 1 && column >= 1).then(|| (line as usize, column as usize));
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
    let comprehensions: usize = COMPREHENSIONS
        .iter()
        .map(|m| source.matches(m).count())
        .sum();
    if comprehensions > MAX_COMPREHENSIONS {
        return Err(ExpressionError::at(
            format!(
                "the condition uses {comprehensions} comprehensions (all, exists, map, filter…); at most {MAX_COMPREHENSIONS} are allowed"
            ),
            None,
        ));
    }
    Ok(())
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
        let c = Condition::compile("x > 2 && name in ['a', 'b']").unwrap();
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
        let c = Condition::compile(&deep).unwrap();
        // Evaluation runs on the caller's stack: a Tokio worker has 2 MiB.
        let result = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || c.holds(&context()))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(result, Ok(true));
    }

    #[test]
    fn run_time_errors_are_reported_not_raised() {
        let c = Condition::compile("journal.category == 'shoes'").unwrap();
        let mut ctx = context();
        ctx.add_variable_from_value("journal", std::collections::HashMap::<String, i64>::new());
        assert!(c.holds(&ctx).is_err());
        let not_bool = Condition::compile("1 + 1").unwrap();
        assert!(
            not_bool
                .holds(&context())
                .unwrap_err()
                .contains("not true or false")
        );
    }
}
