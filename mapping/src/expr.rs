//! Expression AST and evaluator (§2.4, §2.6, §2.9).
//!
//! Operator semantics:
//! * `+` concatenates when either operand is a string (the other operand
//!   is converted with `str::from` rules); otherwise numeric.
//! * int `op` int stays int (`/` truncates, `%` keeps the dividend's sign,
//!   `^` with a non-negative exponent); overflow and division by zero are
//!   errors. Any float operand gives a float.
//! * `<`, `>`, `<=`, `>=` compare numbers with numbers or strings with strings.
//! * `==`, `!=` never fail: values of different types are unequal, ints and
//!   floats compare numerically, `() == ()` is true.
//! * `&&`, `||`, `!` need booleans; `&&`/`||` short-circuit.
//! * Any other operator with an Empty operand gives Empty.

use std::borrow::Cow;

use super::functions::{self, Func};
use super::value::Value;

/// Unary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnOp {
    Not,
    Neg,
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Pow,
    Mul,
    Div,
    Rem,
    Add,
    Sub,
    Lt,
    Gt,
    Le,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

impl BinOp {
    fn symbol(self) -> &'static str {
        match self {
            BinOp::Pow => "^",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Lt => "<",
            BinOp::Gt => ">",
            BinOp::Le => "<=",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }
}

/// A compiled expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal (`1`, `2.5`, `"s"`, `true`, `()`).
    Lit(Value),
    /// `$n` as a 0-based input index.
    Input(usize),
    /// `!x`, `-x`.
    Unary(UnOp, Box<Expr>),
    /// `a op b`.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `(a, b, ...)`.
    Tuple(Vec<Expr>),
    /// `name(args)`; the name is kept for error messages.
    Call(&'static str, Func, Vec<Expr>),
}

/// Evaluates an expression against the rule's input values. Inputs and
/// literals are borrowed, not copied.
pub fn eval<'a>(e: &'a Expr, inputs: &'a [Value]) -> Result<Cow<'a, Value>, String> {
    Ok(match e {
        Expr::Lit(v) => Cow::Borrowed(v),
        Expr::Input(i) => Cow::Borrowed(inputs.get(*i).unwrap_or(&EMPTY)),
        Expr::Unary(op, a) => Cow::Owned(unary(*op, eval(a, inputs)?.as_ref())?),
        Expr::Binary(BinOp::And, a, b) => Cow::Owned(logic(true, a, b, inputs)?),
        Expr::Binary(BinOp::Or, a, b) => Cow::Owned(logic(false, a, b, inputs)?),
        Expr::Binary(op, a, b) => Cow::Owned(binary(*op, eval(a, inputs)?, eval(b, inputs)?)?),
        Expr::Tuple(items) => Cow::Owned(Value::Tuple(
            items
                .iter()
                .map(|x| eval(x, inputs).map(Cow::into_owned))
                .collect::<Result<_, _>>()?,
        )),
        Expr::Call(name, Func::If, args) => return choose(name, args, inputs),
        Expr::Call(name, f, args) => Cow::Owned(with_args(args, inputs, |vals| {
            functions::call(name, *f, vals)
        })??),
    })
}

static EMPTY: Value = Value::Empty;

/// `if(cond, then, else)`: only the chosen branch is evaluated.
fn choose<'a>(name: &str, args: &'a [Expr], inputs: &'a [Value]) -> Result<Cow<'a, Value>, String> {
    let branch = |k: usize| {
        args.get(k)
            .map_or(Ok(Cow::Borrowed(&EMPTY)), |x| eval(x, inputs))
    };
    let cond = branch(0)?;
    match cond.as_ref() {
        Value::Bool(true) => branch(1),
        Value::Bool(false) => branch(2),
        Value::Empty => Ok(Cow::Borrowed(&EMPTY)),
        other => Err(format!(
            "{name}: condition must be a boolean, got {}",
            other.type_name()
        )),
    }
}

/// Evaluates call arguments, on the stack for up to five (`scale`).
fn with_args<'a, R>(
    args: &'a [Expr],
    inputs: &'a [Value],
    f: impl FnOnce(&[Cow<'a, Value>]) -> R,
) -> Result<R, String> {
    const ON_STACK: usize = 5;
    if args.len() > ON_STACK {
        let vals = args
            .iter()
            .map(|x| eval(x, inputs))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(f(&vals));
    }
    let mut vals: [Cow<'a, Value>; ON_STACK] = std::array::from_fn(|_| Cow::Borrowed(&EMPTY));
    for (slot, x) in vals.iter_mut().zip(args) {
        *slot = eval(x, inputs)?;
    }
    Ok(f(&vals[..args.len()]))
}

fn logic(is_and: bool, a: &Expr, b: &Expr, inputs: &[Value]) -> Result<Value, String> {
    let sym = if is_and { "&&" } else { "||" };
    let check = |v: &Value| -> Result<Option<bool>, String> {
        match v {
            Value::Bool(x) => Ok(Some(*x)),
            Value::Empty => Ok(None),
            other => Err(format!("'{sym}' needs booleans, got {}", other.type_name())),
        }
    };
    let Some(l) = check(eval(a, inputs)?.as_ref())? else {
        return Ok(Value::Empty);
    };
    if l != is_and {
        return Ok(Value::Bool(l));
    }
    Ok(match check(eval(b, inputs)?.as_ref())? {
        Some(r) => Value::Bool(r),
        None => Value::Empty,
    })
}

fn unary(op: UnOp, v: &Value) -> Result<Value, String> {
    match (op, v) {
        (_, Value::Empty) => Ok(Value::Empty),
        (UnOp::Not, Value::Bool(b)) => Ok(Value::Bool(!*b)),
        (UnOp::Neg, Value::Int(i)) => i
            .checked_neg()
            .map(Value::Int)
            .ok_or_else(|| "integer overflow in '-'".to_string()),
        (UnOp::Neg, Value::Float(f)) => Ok(Value::Float(-*f)),
        (UnOp::Not, other) => Err(format!("'!' needs a boolean, got {}", other.type_name())),
        (UnOp::Neg, other) => Err(format!("'-' needs a number, got {}", other.type_name())),
    }
}

fn type_error(op: BinOp, a: &Value, b: &Value) -> String {
    format!(
        "cannot apply '{}' to {} and {}",
        op.symbol(),
        a.type_name(),
        b.type_name()
    )
}

fn overflow(op: BinOp) -> String {
    format!("integer overflow in '{}'", op.symbol())
}

/// `a + b` with a string operand; an owned left string is extended in place.
fn concat(a: Cow<'_, Value>, b: &Value) -> Result<Value, String> {
    let mut text = match a {
        Cow::Owned(Value::Str(s)) => s,
        other => other.to_text()?,
    };
    b.write_text(&mut text)?;
    Ok(Value::Str(text))
}

fn binary(op: BinOp, a: Cow<'_, Value>, b: Cow<'_, Value>) -> Result<Value, String> {
    let (a_ref, b) = (a.as_ref(), b.as_ref());
    match op {
        BinOp::Eq => return Ok(Value::Bool(a_ref.loose_eq(b))),
        BinOp::Ne => return Ok(Value::Bool(!a_ref.loose_eq(b))),
        _ => {}
    }
    if matches!(a_ref, Value::Empty) || matches!(b, Value::Empty) {
        return Ok(Value::Empty);
    }
    if op == BinOp::Add && (matches!(a_ref, Value::Str(_)) || matches!(b, Value::Str(_))) {
        return concat(a, b);
    }
    arithmetic_or_compare(op, a_ref, b)
}

fn arithmetic_or_compare(op: BinOp, a: &Value, b: &Value) -> Result<Value, String> {
    match op {
        BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => {
            let ord = match (a, b) {
                (Value::Int(x), Value::Int(y)) => x.partial_cmp(y),
                (Value::Str(x), Value::Str(y)) => x.partial_cmp(y),
                _ => match (a.as_f64(), b.as_f64()) {
                    (Some(x), Some(y)) => x.partial_cmp(&y),
                    _ => return Err(type_error(op, a, b)),
                },
            };
            let Some(ord) = ord else {
                return Ok(Value::Bool(false));
            };
            use std::cmp::Ordering::*;
            return Ok(Value::Bool(match op {
                BinOp::Lt => ord == Less,
                BinOp::Gt => ord == Greater,
                BinOp::Le => ord != Greater,
                _ => ord != Less,
            }));
        }
        BinOp::And | BinOp::Or | BinOp::Eq | BinOp::Ne => {
            return Err(type_error(op, a, b));
        }
        _ => {}
    }
    // Arithmetic.
    if let (Value::Int(x), Value::Int(y)) = (a, b) {
        let (x, y) = (*x, *y);
        let r = match op {
            BinOp::Add => x.checked_add(y),
            BinOp::Sub => x.checked_sub(y),
            BinOp::Mul => x.checked_mul(y),
            BinOp::Div | BinOp::Rem if y == 0 => return Err("division by zero".to_string()),
            BinOp::Div => x.checked_div(y),
            BinOp::Rem => x.checked_rem(y),
            BinOp::Pow => {
                if y < 0 {
                    return Ok(Value::Float((x as f64).powf(y as f64)));
                }
                u32::try_from(y).ok().and_then(|e| x.checked_pow(e))
            }
            _ => None,
        };
        return r.map(Value::Int).ok_or_else(|| overflow(op));
    }
    let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) else {
        return Err(type_error(op, a, b));
    };
    Ok(Value::Float(match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div => x / y,
        BinOp::Rem => x % y,
        _ => x.powf(y),
    }))
}
