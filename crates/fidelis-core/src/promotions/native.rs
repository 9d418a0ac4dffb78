//! The fast path for conditions: the shapes most promotions use — comparisons of the
//! journal's, a line's, the local time's and the member's balances' fields with literals,
//! `in` lists, `startsWith`/`endsWith`/`contains`, `&&`, `||`, `!`, and `exists`/`all` over
//! the journal's lines — compiled from the CEL syntax tree into a small tree evaluated
//! directly on the journal, without building CEL values. Anything else stays with the CEL
//! interpreter.
//!
//! The semantics are CEL's, and a test compares both on every shape: numbers compare
//! across int and double; `==`, `!=` and `in` between different types are false; ordering
//! a null or mismatched types, or calling a string function on null, is an error; `&&` and
//! `||` absorb errors when the other side decides (`false && error` is false).

use cel::common::ast::{Expr, IdedExpr, LiteralValue, operators};

use crate::ids::CurrencyIx;
use crate::journal::{Accrual, Line};
use crate::money::MoneyCurrency;
use crate::program::Currency;

/// A field the fast path reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    JournalType,
    JournalSubtype,
    JournalAmount,
    JournalCurrency,
    JournalChannel,
    JournalStore,
    JournalPartner,
    LineId,
    LineSku,
    LineCategory,
    LineQuantity,
    LineAmount,
    LocalDate,
    LocalYear,
    LocalMonth,
    LocalDay,
    LocalWeekday,
    LocalHour,
    LocalMinute,
    Balance(CurrencyIx),
    /// `member.birthday_today`, `member.tenure_days`, `member.enrolled_at`: only when the
    /// store loaded the member's facts (otherwise an error, as in CEL: no such key).
    MemberBirthdayToday,
    MemberTenureDays,
    MemberEnrolledAt,
    /// `member.tier`: the tier of the program's first tier group the member's qualifying
    /// balance reaches (null without tier groups).
    MemberTier,
}

impl Field {
    /// Whether the field needs the member's profile and enrolment loaded.
    pub(crate) fn needs_member_facts(self) -> bool {
        matches!(
            self,
            Self::MemberBirthdayToday | Self::MemberTenureDays | Self::MemberEnrolledAt
        )
    }
}

impl Native {
    /// Whether any field of the tree needs the member's facts.
    pub(crate) fn needs_member_facts(&self) -> bool {
        let operand = |o: &Operand| matches!(o, Operand::Field(f) if f.needs_member_facts());
        match self {
            Native::Lit(_) => false,
            Native::Field(f) | Native::Str(_, f, _) => f.needs_member_facts(),
            Native::And(a, b) | Native::Or(a, b) => {
                a.needs_member_facts() || b.needs_member_facts()
            }
            Native::Not(a) | Native::AnyLine(a) | Native::AllLines(a) => a.needs_member_facts(),
            Native::Cmp(_, a, b) => operand(a) || operand(b),
            Native::In(a, _) => operand(a),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrFn {
    StartsWith,
    EndsWith,
    Contains,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Operand {
    Field(Field),
    Lit(Lit),
}

/// A compiled condition of the fast path.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Native {
    Lit(bool),
    Field(Field),
    And(Box<Native>, Box<Native>),
    Or(Box<Native>, Box<Native>),
    Not(Box<Native>),
    Cmp(Cmp, Operand, Operand),
    In(Operand, Vec<Lit>),
    Str(StrFn, Field, String),
    /// `journal.lines.exists(l, …)`; the predicate reads the line fields.
    AnyLine(Box<Native>),
    /// `journal.lines.all(l, …)`.
    AllLines(Box<Native>),
}

/// What the names in a condition mean while compiling it.
pub(crate) struct Names<'a> {
    pub currencies: &'a [Currency],
    /// The name bound to the current line: `line` in line scope, a comprehension's
    /// variable inside `exists`/`all`.
    pub line: Option<&'a str>,
}

/// Compiles `expr` to the fast path, or `None` when any part of it is outside it.
pub(crate) fn compile(expr: &IdedExpr, names: &Names<'_>) -> Option<Native> {
    match &expr.expr {
        Expr::Literal(LiteralValue::Boolean(b)) => Some(Native::Lit(**b)),
        Expr::Select(_) => Some(Native::Field(field(expr, names)?)),
        Expr::Call(call) => {
            let args = &call.args;
            match (call.func_name.as_str(), &call.target, args.len()) {
                (operators::LOGICAL_AND, None, 2) => Some(Native::And(
                    Box::new(compile(&args[0], names)?),
                    Box::new(compile(&args[1], names)?),
                )),
                (operators::LOGICAL_OR, None, 2) => Some(Native::Or(
                    Box::new(compile(&args[0], names)?),
                    Box::new(compile(&args[1], names)?),
                )),
                (operators::LOGICAL_NOT, None, 1) => {
                    Some(Native::Not(Box::new(compile(&args[0], names)?)))
                }
                (operators::IN, None, 2) => {
                    let Expr::List(list) = &args[1].expr else {
                        return None;
                    };
                    if !list.optional_indices.is_empty() {
                        return None;
                    }
                    let lits: Option<Vec<Lit>> = list.elements.iter().map(literal).collect();
                    Some(Native::In(operand(&args[0], names)?, lits?))
                }
                (op, None, 2) => {
                    let cmp = match op {
                        operators::EQUALS => Cmp::Eq,
                        operators::NOT_EQUALS => Cmp::Ne,
                        operators::LESS => Cmp::Lt,
                        operators::LESS_EQUALS => Cmp::Le,
                        operators::GREATER => Cmp::Gt,
                        operators::GREATER_EQUALS => Cmp::Ge,
                        _ => return None,
                    };
                    Some(Native::Cmp(
                        cmp,
                        operand(&args[0], names)?,
                        operand(&args[1], names)?,
                    ))
                }
                (name @ ("startsWith" | "endsWith" | "contains"), Some(target), 1) => {
                    let f = match name {
                        "startsWith" => StrFn::StartsWith,
                        "endsWith" => StrFn::EndsWith,
                        _ => StrFn::Contains,
                    };
                    let Some(Lit::Str(arg)) = literal(&args[0]) else {
                        return None;
                    };
                    Some(Native::Str(f, field(target, names)?, arg))
                }
                _ => None,
            }
        }
        Expr::Comprehension(c) => {
            // `journal.lines.exists(v, p)` and `.all(v, p)`, as the parser expands them.
            if c.iter_var2.is_some() || names.line.is_some() {
                return None;
            }
            if !is_path(&c.iter_range, &["journal", "lines"]) {
                return None;
            }
            let Expr::Call(step) = &c.loop_step.expr else {
                return None;
            };
            let init = match &c.accu_init.expr {
                Expr::Literal(LiteralValue::Boolean(b)) => **b,
                _ => return None,
            };
            let is_accu = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(n) if *n == c.accu_var);
            let Expr::Ident(result) = &c.result.expr else {
                return None;
            };
            if *result != c.accu_var || step.args.len() != 2 || !is_accu(&step.args[0]) {
                return None;
            }
            let inner = Names {
                currencies: names.currencies,
                line: Some(c.iter_var.as_str()),
            };
            let predicate = Box::new(compile(&step.args[1], &inner)?);
            match (step.func_name.as_str(), init) {
                (operators::LOGICAL_OR, false) => Some(Native::AnyLine(predicate)),
                (operators::LOGICAL_AND, true) => Some(Native::AllLines(predicate)),
                _ => None,
            }
        }
        _ => None,
    }
}

fn operand(expr: &IdedExpr, names: &Names<'_>) -> Option<Operand> {
    match literal(expr) {
        Some(l) => Some(Operand::Lit(l)),
        None => field(expr, names).map(Operand::Field),
    }
}

fn literal(expr: &IdedExpr) -> Option<Lit> {
    match &expr.expr {
        Expr::Literal(l) => Some(match l {
            LiteralValue::Null => Lit::Null,
            LiteralValue::Boolean(b) => Lit::Bool(**b),
            LiteralValue::Int(i) => Lit::Int(**i),
            LiteralValue::Double(d) => Lit::Float(**d),
            LiteralValue::String(s) => Lit::Str(s.inner().to_owned()),
            _ => return None,
        }),
        _ => None,
    }
}

/// `a.b.c` as its segments, when `expr` is a plain path.
fn path(expr: &IdedExpr) -> Option<Vec<&str>> {
    match &expr.expr {
        Expr::Ident(name) => Some(vec![name.as_str()]),
        Expr::Select(s) if !s.test => {
            let mut p = path(&s.operand)?;
            p.push(s.field.as_str());
            Some(p)
        }
        _ => None,
    }
}

fn is_path(expr: &IdedExpr, want: &[&str]) -> bool {
    path(expr).is_some_and(|p| p == want)
}

fn field(expr: &IdedExpr, names: &Names<'_>) -> Option<Field> {
    let p = path(expr)?;
    if let (Some(line), [root, name]) = (names.line, p.as_slice())
        && root == &line
    {
        return Some(match *name {
            "line_id" => Field::LineId,
            "sku" => Field::LineSku,
            "category" => Field::LineCategory,
            "quantity" => Field::LineQuantity,
            "amount" => Field::LineAmount,
            _ => return None,
        });
    }
    Some(match p.as_slice() {
        ["journal", "type"] => Field::JournalType,
        ["journal", "subtype"] => Field::JournalSubtype,
        ["journal", "amount"] => Field::JournalAmount,
        ["journal", "currency"] => Field::JournalCurrency,
        ["journal", "channel"] => Field::JournalChannel,
        ["journal", "store"] => Field::JournalStore,
        ["journal", "partner"] => Field::JournalPartner,
        ["local", "date"] => Field::LocalDate,
        ["local", "year"] => Field::LocalYear,
        ["local", "month"] => Field::LocalMonth,
        ["local", "day"] => Field::LocalDay,
        ["local", "weekday"] => Field::LocalWeekday,
        ["local", "hour"] => Field::LocalHour,
        ["local", "minute"] => Field::LocalMinute,
        ["member", "tier"] => Field::MemberTier,
        ["member", "birthday_today"] => Field::MemberBirthdayToday,
        ["member", "tenure_days"] => Field::MemberTenureDays,
        ["member", "enrolled_at"] => Field::MemberEnrolledAt,
        ["member", "balances", code] => {
            let i = names
                .currencies
                .iter()
                .position(|c| c.code.as_str() == *code)?;
            Field::Balance(CurrencyIx(u16::try_from(i).ok()?))
        }
        _ => return None,
    })
}

/// The facts the fast path reads, computed once per journal.
pub(crate) struct Facts<'a> {
    pub accrual: &'a Accrual,
    pub money: &'a MoneyCurrency,
    pub amount: f64,
    pub local_date: String,
    /// year, month, day, weekday (Monday 1), hour, minute.
    pub local: [i64; 6],
    pub balances: &'a [i64],
    /// `birthday_today`, `tenure_days`, `enrolled_at` (local date), when the member's facts
    /// were loaded.
    pub member: Option<MemberFacts>,
    /// The member's tier code in the first tier group.
    pub tier: Option<&'a str>,
}

/// The member facts the fast path reads, derived once per journal.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MemberFacts {
    pub birthday_today: bool,
    pub tenure_days: Option<i64>,
    pub enrolled_at: Option<String>,
}

/// A value during evaluation.
#[derive(Debug, Clone, Copy)]
enum V<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
}

impl V<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            V::Null => "null_type",
            V::Bool(_) => "bool",
            V::Int(_) => "int",
            V::Float(_) => "double",
            V::Str(_) => "string",
        }
    }
}

/// Money in major units as conditions see it (`19.99`); the CEL path uses the same.
pub(crate) fn major(minor: i64, money: &MoneyCurrency) -> f64 {
    minor as f64 / 10f64.powi(i32::from(money.scale()))
}

fn text(s: &Option<String>) -> V<'_> {
    s.as_deref().map_or(V::Null, V::Str)
}

fn read<'a>(f: Field, facts: &'a Facts<'a>, line: Option<&'a Line>) -> Result<V<'a>, String> {
    let a = facts.accrual;
    let line_field = |get: fn(&'a Line) -> V<'a>| {
        line.map(get)
            .ok_or_else(|| "no line is bound here".to_owned())
    };
    Ok(match f {
        Field::JournalType => V::Str(a.activity.as_str()),
        Field::JournalSubtype => a.subtype.as_ref().map_or(V::Null, |s| V::Str(s.as_str())),
        Field::JournalAmount => V::Float(facts.amount),
        Field::JournalCurrency => V::Str(facts.money.code()),
        Field::JournalChannel => text(&a.channel),
        Field::JournalStore => text(&a.store),
        Field::JournalPartner => text(&a.partner),
        Field::LineId => line_field(|l| V::Str(l.line_id.as_str()))?,
        Field::LineSku => line_field(|l| text(&l.sku))?,
        Field::LineCategory => line_field(|l| text(&l.category))?,
        Field::LineQuantity => line_field(|l| V::Int(i64::from(l.quantity)))?,
        Field::LineAmount => {
            let l = line.ok_or_else(|| "no line is bound here".to_owned())?;
            V::Float(major(l.amount.0, facts.money))
        }
        Field::LocalDate => V::Str(facts.local_date.as_str()),
        Field::LocalYear => V::Int(facts.local[0]),
        Field::LocalMonth => V::Int(facts.local[1]),
        Field::LocalDay => V::Int(facts.local[2]),
        Field::LocalWeekday => V::Int(facts.local[3]),
        Field::LocalHour => V::Int(facts.local[4]),
        Field::LocalMinute => V::Int(facts.local[5]),
        Field::Balance(ix) => V::Int(facts.balances.get(ix.index()).copied().unwrap_or(0)),
        Field::MemberTier => facts.tier.map_or(V::Null, V::Str),
        Field::MemberBirthdayToday | Field::MemberTenureDays | Field::MemberEnrolledAt => {
            let Some(m) = &facts.member else {
                let name = match f {
                    Field::MemberBirthdayToday => "birthday_today",
                    Field::MemberTenureDays => "tenure_days",
                    _ => "enrolled_at",
                };
                return Err(format!("No such key: {name}"));
            };
            match f {
                Field::MemberBirthdayToday => V::Bool(m.birthday_today),
                Field::MemberTenureDays => m.tenure_days.map_or(V::Null, V::Int),
                _ => m.enrolled_at.as_deref().map_or(V::Null, V::Str),
            }
        }
    })
}

fn lit(l: &Lit) -> V<'_> {
    match l {
        Lit::Null => V::Null,
        Lit::Bool(b) => V::Bool(*b),
        Lit::Int(i) => V::Int(*i),
        Lit::Float(f) => V::Float(*f),
        Lit::Str(s) => V::Str(s),
    }
}

fn value<'a>(
    o: &'a Operand,
    facts: &'a Facts<'a>,
    line: Option<&'a Line>,
) -> Result<V<'a>, String> {
    match o {
        Operand::Field(f) => read(*f, facts, line),
        Operand::Lit(l) => Ok(lit(l)),
    }
}

fn equal(a: V<'_>, b: V<'_>) -> bool {
    match (a, b) {
        (V::Null, V::Null) => true,
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Int(x), V::Int(y)) => x == y,
        (V::Int(x), V::Float(y)) | (V::Float(y), V::Int(x)) => (x as f64) == y,
        (V::Float(x), V::Float(y)) => x == y,
        (V::Str(x), V::Str(y)) => x == y,
        _ => false,
    }
}

fn order(a: V<'_>, b: V<'_>, op: &str) -> Result<std::cmp::Ordering, String> {
    let o = match (a, b) {
        (V::Int(x), V::Int(y)) => Some(x.cmp(&y)),
        (V::Int(x), V::Float(y)) => (x as f64).partial_cmp(&y),
        (V::Float(x), V::Int(y)) => x.partial_cmp(&(y as f64)),
        (V::Float(x), V::Float(y)) => x.partial_cmp(&y),
        (V::Str(x), V::Str(y)) => Some(x.cmp(y)),
        (V::Bool(x), V::Bool(y)) => Some(x.cmp(&y)),
        _ => None,
    };
    o.ok_or_else(|| {
        format!(
            "found no matching overload for '{op}' applied to '({}, {})'",
            a.type_name(),
            b.type_name()
        )
    })
}

/// Evaluates a compiled condition; `line` is the bound line, if any.
pub(crate) fn eval(n: &Native, facts: &Facts<'_>, line: Option<&Line>) -> Result<bool, String> {
    use std::cmp::Ordering::*;
    match n {
        Native::Lit(b) => Ok(*b),
        Native::Field(f) => match read(*f, facts, line)? {
            V::Bool(b) => Ok(b),
            other => Err(format!(
                "the condition gave {}, not true or false",
                other.type_name()
            )),
        },
        // CEL's logical operators are commutative over errors: the side that decides
        // wins, whichever it is.
        Native::And(a, b) => match eval(a, facts, line) {
            Ok(false) => Ok(false),
            Ok(true) => eval(b, facts, line),
            Err(e) => match eval(b, facts, line) {
                Ok(false) => Ok(false),
                _ => Err(e),
            },
        },
        Native::Or(a, b) => match eval(a, facts, line) {
            Ok(true) => Ok(true),
            Ok(false) => eval(b, facts, line),
            Err(e) => match eval(b, facts, line) {
                Ok(true) => Ok(true),
                _ => Err(e),
            },
        },
        Native::Not(a) => eval(a, facts, line).map(|b| !b),
        Native::Cmp(op, a, b) => {
            let (a, b) = (value(a, facts, line)?, value(b, facts, line)?);
            Ok(match op {
                Cmp::Eq => equal(a, b),
                Cmp::Ne => !equal(a, b),
                Cmp::Lt => order(a, b, "_<_")? == Less,
                Cmp::Le => order(a, b, "_<=_")? != Greater,
                Cmp::Gt => order(a, b, "_>_")? == Greater,
                Cmp::Ge => order(a, b, "_>=_")? != Less,
            })
        }
        Native::In(a, list) => {
            let a = value(a, facts, line)?;
            Ok(list.iter().any(|l| equal(a, lit(l))))
        }
        Native::Str(f, field, arg) => match read(*field, facts, line)? {
            V::Str(s) => Ok(match f {
                StrFn::StartsWith => s.starts_with(arg.as_str()),
                StrFn::EndsWith => s.ends_with(arg.as_str()),
                StrFn::Contains => s.contains(arg.as_str()),
            }),
            other => Err(format!(
                "found no matching overload for '{}' applied to '{}.(string)'",
                match f {
                    StrFn::StartsWith => "startsWith",
                    StrFn::EndsWith => "endsWith",
                    StrFn::Contains => "contains",
                },
                other.type_name()
            )),
        },
        Native::AnyLine(p) => {
            let mut error = None;
            for l in &facts.accrual.lines {
                match eval(p, facts, Some(l)) {
                    Ok(true) => return Ok(true),
                    Ok(false) => {}
                    Err(e) => error = error.or(Some(e)),
                }
            }
            error.map_or(Ok(false), Err)
        }
        Native::AllLines(p) => {
            let mut error = None;
            for l in &facts.accrual.lines {
                match eval(p, facts, Some(l)) {
                    Ok(false) => return Ok(false),
                    Ok(true) => {}
                    Err(e) => error = error.or(Some(e)),
                }
            }
            error.map_or(Ok(true), Err)
        }
    }
}
