//! Recursive-descent parser for expressions (§2.4).
//!
//! Precedence, highest first: unary `!` `-` · `^` · `*` `/` `%` · `+` `-` ·
//! `<` `>` `<=` `>=` · `==` `!=` · `&&` · `||`. Every binary level is
//! left-associative, including `^` (`2^3^2 = 64`), and unary operators bind
//! tighter than `^` (`-2^2 = 4`), following the 2026 expressions reference.

use super::error::LocalError;
use super::expr::{BinOp, Expr, UnOp};
use super::functions;
use super::lexer::{tokenize, Tok, Token};
use super::value::Value;

/// Parses `src`; `$n` must satisfy `1 <= n <= n_inputs`.
pub fn parse(src: &str, n_inputs: usize) -> Result<Expr, LocalError> {
    let toks = tokenize(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        n_inputs,
        depth: 0,
    };
    if p.peek().tok == Tok::Eof {
        return Err(LocalError::new("empty expression", 1));
    }
    let e = p.expr()?;
    let t = p.peek();
    if t.tok != Tok::Eof {
        return Err(LocalError::new(
            format!(
                "unexpected {} (expected an operator or end of expression)",
                t.tok.describe()
            ),
            t.col,
        ));
    }
    Ok(e)
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    n_inputs: usize,
    /// Nesting of sub-expressions and unary operators so far.
    depth: usize,
}

/// Deepest nesting of parentheses, calls, tuples and unary operators an
/// expression may have. Parsing and evaluation recurse, so input from a
/// configuration file must not choose the depth (a fuzzer found a stack
/// overflow at 218 levels); real rules nest a few levels.
pub const MAX_NESTING: usize = 32;

type Level = fn(&Tok) -> Option<BinOp>;

fn or_ops(t: &Tok) -> Option<BinOp> {
    (*t == Tok::OrOr).then_some(BinOp::Or)
}
fn and_ops(t: &Tok) -> Option<BinOp> {
    (*t == Tok::AndAnd).then_some(BinOp::And)
}
fn eq_ops(t: &Tok) -> Option<BinOp> {
    match t {
        Tok::EqEq => Some(BinOp::Eq),
        Tok::Ne => Some(BinOp::Ne),
        _ => None,
    }
}
fn cmp_ops(t: &Tok) -> Option<BinOp> {
    match t {
        Tok::Lt => Some(BinOp::Lt),
        Tok::Gt => Some(BinOp::Gt),
        Tok::Le => Some(BinOp::Le),
        Tok::Ge => Some(BinOp::Ge),
        _ => None,
    }
}
fn add_ops(t: &Tok) -> Option<BinOp> {
    match t {
        Tok::Plus => Some(BinOp::Add),
        Tok::Minus => Some(BinOp::Sub),
        _ => None,
    }
}
fn mul_ops(t: &Tok) -> Option<BinOp> {
    match t {
        Tok::Star => Some(BinOp::Mul),
        Tok::Slash => Some(BinOp::Div),
        Tok::Percent => Some(BinOp::Rem),
        _ => None,
    }
}
fn pow_ops(t: &Tok) -> Option<BinOp> {
    (*t == Tok::Caret).then_some(BinOp::Pow)
}

const LEVELS: [Level; 7] = [or_ops, and_ops, eq_ops, cmp_ops, add_ops, mul_ops, pow_ops];

impl Parser {
    fn peek(&self) -> &Token {
        // The token list always ends with Eof and `pos` never passes it.
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<Token, LocalError> {
        let t = self.peek().clone();
        if t.tok == tok {
            Ok(self.bump())
        } else {
            Err(LocalError::new(
                format!("expected {what}, found {}", t.tok.describe()),
                t.col,
            ))
        }
    }

    fn expr(&mut self) -> Result<Expr, LocalError> {
        self.nested(|p| p.level(0))
    }

    /// Runs `parse` one nesting level deeper, refusing past [`MAX_NESTING`].
    fn nested(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<Expr, LocalError>,
    ) -> Result<Expr, LocalError> {
        if self.depth >= MAX_NESTING {
            return Err(LocalError::new(
                format!("expression nested more than {MAX_NESTING} levels deep"),
                self.peek().col,
            ));
        }
        self.depth += 1;
        let result = parse(self);
        self.depth -= 1;
        result
    }

    fn level(&mut self, i: usize) -> Result<Expr, LocalError> {
        if i >= LEVELS.len() {
            return self.unary();
        }
        let mut lhs = self.level(i + 1)?;
        while let Some(op) = LEVELS[i](&self.peek().tok) {
            self.bump();
            let rhs = self.level(i + 1)?;
            lhs = Expr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, LocalError> {
        let op = match self.peek().tok {
            Tok::Not => UnOp::Not,
            Tok::Minus => UnOp::Neg,
            _ => return self.primary(),
        };
        self.bump();
        let inner = self.nested(Self::unary)?;
        // Fold negative literals so `-9223372036854775808`-style constants stay literals.
        Ok(match (op, inner) {
            (UnOp::Neg, Expr::Lit(Value::Int(i))) if i != i64::MIN => Expr::Lit(Value::Int(-i)),
            (UnOp::Neg, Expr::Lit(Value::Float(f))) => Expr::Lit(Value::Float(-f)),
            (op, inner) => Expr::Unary(op, Box::new(inner)),
        })
    }

    fn primary(&mut self) -> Result<Expr, LocalError> {
        let t = self.bump();
        match t.tok {
            Tok::Int(i) => Ok(Expr::Lit(Value::Int(i))),
            Tok::Float(f) => Ok(Expr::Lit(Value::Float(f))),
            Tok::Str(s) => Ok(Expr::Lit(Value::Str(s))),
            Tok::True => Ok(Expr::Lit(Value::Bool(true))),
            Tok::False => Ok(Expr::Lit(Value::Bool(false))),
            Tok::Input(n) => {
                if n > self.n_inputs {
                    let msg = if self.n_inputs == 0 {
                        format!("${n} used but the rule has no inputs")
                    } else {
                        format!(
                            "${n} out of range: the rule has {} input{}",
                            self.n_inputs,
                            if self.n_inputs == 1 { "" } else { "s" }
                        )
                    };
                    return Err(LocalError::new(msg, t.col));
                }
                Ok(Expr::Input(n - 1))
            }
            Tok::LParen => {
                if self.peek().tok == Tok::RParen {
                    self.bump();
                    return Ok(Expr::Lit(Value::Empty));
                }
                let first = self.expr()?;
                if self.peek().tok == Tok::RParen {
                    self.bump();
                    return Ok(first);
                }
                let mut items = vec![first];
                while self.peek().tok == Tok::Comma {
                    self.bump();
                    if self.peek().tok == Tok::RParen {
                        break; // trailing comma: `(a,)` is a one-element tuple
                    }
                    items.push(self.expr()?);
                }
                self.expect(Tok::RParen, "',' or ')'")?;
                Ok(Expr::Tuple(items))
            }
            Tok::Ident(name) => self.call(name, t.col),
            Tok::Eof => Err(LocalError::new(
                "expected an expression, found end of expression",
                t.col,
            )),
            other => Err(LocalError::new(
                format!("expected an expression, found {}", other.describe()),
                t.col,
            )),
        }
    }

    fn call(&mut self, name: String, col: usize) -> Result<Expr, LocalError> {
        let Some((f, arity)) = functions::lookup(&name) else {
            if functions::is_graph_only(&name) {
                return Err(LocalError::new(
                    format!("function '{name}' is only available in data flow graphs"),
                    col,
                ));
            }
            let hint = functions::suggest(&name).map(|s| format!("did you mean '{s}'?"));
            let what = if self.peek().tok == Tok::LParen {
                "unknown function"
            } else {
                "unknown identifier"
            };
            return Err(LocalError::new(format!("{what} '{name}'"), col).with_hint(hint));
        };
        let canonical = functions::canonical_name(&name);
        self.expect(Tok::LParen, &format!("'(' after '{name}'"))?;
        let mut args = Vec::new();
        if self.peek().tok != Tok::RParen {
            loop {
                args.push(self.expr()?);
                if self.peek().tok == Tok::Comma {
                    self.bump();
                    continue;
                }
                break;
            }
        }
        self.expect(Tok::RParen, "',' or ')'")?;
        if !arity.accepts(args.len()) {
            return Err(LocalError::new(
                format!(
                    "function '{name}' takes {}, got {}",
                    arity.describe(),
                    args.len()
                ),
                col,
            ));
        }
        Ok(Expr::Call(canonical, f, args))
    }
}

#[cfg(test)]
mod tests {
    use super::super::expr::eval;
    use super::*;

    fn ev(src: &str, inputs: &[Value]) -> Value {
        let e = parse(src, inputs.len()).unwrap();
        eval(&e, inputs).unwrap().into_owned()
    }

    fn ev0(src: &str) -> Value {
        ev(src, &[])
    }

    fn err(src: &str, n: usize) -> LocalError {
        parse(src, n).unwrap_err()
    }

    #[test]
    fn precedence() {
        assert_eq!(ev("$1*2^3", &[Value::Int(2)]), Value::Int(16));
        assert_eq!(ev("-$1*2", &[Value::Int(3)]), Value::Int(-6));
        assert_eq!(ev0("-2^2"), Value::Int(4));
        assert_eq!(ev0("2^3^2"), Value::Int(64));
        assert_eq!(ev0("1 + 2 * 3"), Value::Int(7));
        assert_eq!(ev0("(1 + 2) * 3"), Value::Int(9));
        assert_eq!(ev0("10 - 4 - 3"), Value::Int(3));
        assert_eq!(ev0("100 / 10 / 5"), Value::Int(2));
        assert_eq!(ev0("7 % 4 * 2"), Value::Int(6));
        assert_eq!(ev0("1 + 2 < 4 == true"), Value::Bool(true));
        assert_eq!(ev0("true || false && false"), Value::Bool(true));
        assert_eq!(ev0("!false && false"), Value::Bool(false));
        assert_eq!(ev0("!(1 > 2)"), Value::Bool(true));
        assert_eq!(ev0("-(2 + 3)"), Value::Int(-5));
    }

    #[test]
    fn arithmetic_types() {
        assert_eq!(ev0("7 / 2"), Value::Int(3));
        assert_eq!(ev0("7.0 / 2"), Value::Float(3.5));
        assert_eq!(ev0("-7 % 3"), Value::Int(-1));
        assert_eq!(ev0("2 ^ -1"), Value::Float(0.5));
        assert_eq!(ev0("1 + 0.5"), Value::Float(1.5));
        assert_eq!(ev0("\"a\" + 1"), Value::Str("a1".into()));
        assert_eq!(ev0("1.5 + \"a\""), Value::Str("1.5a".into()));
        assert_eq!(ev0("\"a\" + true"), Value::Str("atrue".into()));
        assert_eq!(ev0("\"b\" > \"a\""), Value::Bool(true));
        assert_eq!(ev0("1 == 1.0"), Value::Bool(true));
        assert_eq!(ev0("1 == \"1\""), Value::Bool(false));
        let e = parse("1 / 0", 0).unwrap();
        assert_eq!(eval(&e, &[]).unwrap_err(), "division by zero");
        let e = parse("9223372036854775807 + 1", 0).unwrap();
        assert_eq!(eval(&e, &[]).unwrap_err(), "integer overflow in '+'");
        let e = parse("\"a\" * 2", 0).unwrap();
        assert_eq!(
            eval(&e, &[]).unwrap_err(),
            "cannot apply '*' to string and int"
        );
        let e = parse("1 && true", 0).unwrap();
        assert!(eval(&e, &[]).is_err());
    }

    #[test]
    fn empty_and_tuples() {
        assert_eq!(ev("$1 == ()", &[Value::Empty]), Value::Bool(true));
        assert_eq!(ev("$1 == ()", &[Value::Int(1)]), Value::Bool(false));
        assert_eq!(ev("$1 + 1", &[Value::Empty]), Value::Empty);
        assert_eq!(
            ev("if($1 == (), $2, $1)", &[Value::Empty, Value::Int(5)]),
            Value::Int(5)
        );
        assert_eq!(
            ev0("(1, \"a\", 2.5)"),
            Value::Tuple(vec![
                Value::Int(1),
                Value::Str("a".into()),
                Value::Float(2.5)
            ])
        );
        assert_eq!(ev0("(1,)"), Value::Tuple(vec![Value::Int(1)]));
        assert_eq!(ev0("len((1, 2, 3))"), Value::Int(3));
        assert_eq!(ev0("len(1, 2, 3)"), Value::Int(3));
        assert_eq!(ev0("typeof(())"), Value::Str("empty".into()));
        assert_eq!(ev0("typeof((1,2))"), Value::Str("tuple".into()));
        assert_eq!(ev0("typeof(1.0)"), Value::Str("float".into()));
        assert_eq!(ev0("typeof(true)"), Value::Str("boolean".into()));
    }

    #[test]
    fn if_is_lazy() {
        assert_eq!(ev0("if(true, 1, 1 / 0)"), Value::Int(1));
        assert_eq!(ev0("if(1 > 2, \"a\", \"b\")"), Value::Str("b".into()));
    }

    #[test]
    fn function_calls() {
        assert_eq!(ev("cToF($1)", &[Value::Int(100)]), Value::Float(212.0));
        assert_eq!(ev0("math::abs(-4)"), Value::Int(4));
        assert_eq!(ev0("abs(-4)"), Value::Int(4));
        assert_eq!(ev0("round(2.5)"), Value::Int(3));
        assert_eq!(ev0("min(3, 1.5, 2)"), Value::Float(1.5));
        assert_eq!(
            ev0("str::to_uppercase(\"ab\") + \"c\""),
            Value::Str("ABc".into())
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!(
            "{}1{}",
            "(".repeat(MAX_NESTING - 1),
            ")".repeat(MAX_NESTING - 1)
        );
        assert!(parse(&ok, 0).is_ok());
        let deep = format!("{}1{}", "(".repeat(300), ")".repeat(300));
        let e = parse(&deep, 0).unwrap_err();
        assert_eq!(
            e.message,
            format!("expression nested more than {MAX_NESTING} levels deep")
        );
        assert!(parse(&"-".repeat(300), 0).is_err(), "unary chains too");
    }

    #[test]
    fn syntax_errors() {
        let e = err("ctoF($1)", 1);
        assert_eq!(e.message, "unknown function 'ctoF'");
        assert_eq!(e.column, Some(1));
        assert_eq!(e.hint.as_deref(), Some("did you mean 'cToF'?"));
        let e = err("$1 + $3", 2);
        assert_eq!(e.message, "$3 out of range: the rule has 2 inputs");
        assert_eq!(e.column, Some(6));
        let e = err("($1 + 2", 1);
        assert_eq!(e.message, "expected ',' or ')', found end of expression");
        assert_eq!(e.column, Some(8));
        let e = err("$1 +", 1);
        assert_eq!(e.column, Some(5));
        let e = err("cToF(1, 2)", 0);
        assert_eq!(e.message, "function 'cToF' takes 1 argument, got 2");
        let e = err("1 2", 0);
        assert_eq!(e.column, Some(3));
        let e = err("str::regex_matches($1, \"a\")", 1);
        assert!(e.message.contains("data flow graphs"));
        assert_eq!(err("", 0).message, "empty expression");
        let e = err("foo", 0);
        assert_eq!(e.message, "unknown identifier 'foo'");
    }
}
