//! The built-in function library (§2.5).
//!
//! Every function except `typeof` (and `if`, which the evaluator handles
//! lazily) returns Empty `()` when one of its arguments is Empty, so a
//! missing input leads to "no field written" rather than an error.

use super::value::Value;

/// A built-in function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Unit(UnitConv),
    Scale,
    RoundN,
    Round,
    Floor,
    Ceil,
    Abs,
    Math1(Math1),
    Log,
    Pow,
    Atan2,
    Hypot,
    Len,
    Lower,
    Upper,
    Trim,
    From,
    Substring,
    If,
    Min,
    Max,
    Contains,
    ContainsAny,
    TypeOf,
}

/// The twelve documented unit conversions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitConv {
    CToF,
    FToC,
    PsiToBar,
    BarToPsi,
    InToCm,
    CmToIn,
    FtToM,
    MToFt,
    LbToKg,
    KgToLb,
    GalToL,
    LToGal,
}

impl UnitConv {
    fn apply(self, x: f64) -> f64 {
        match self {
            UnitConv::CToF => x * 9.0 / 5.0 + 32.0,
            UnitConv::FToC => (x - 32.0) * 5.0 / 9.0,
            UnitConv::PsiToBar => x * 0.0689476,
            UnitConv::BarToPsi => x / 0.0689476,
            UnitConv::InToCm => x * 2.54,
            UnitConv::CmToIn => x / 2.54,
            UnitConv::FtToM => x * 0.3048,
            UnitConv::MToFt => x / 0.3048,
            UnitConv::LbToKg => x * 0.453592,
            UnitConv::KgToLb => x / 0.453592,
            UnitConv::GalToL => x * 3.78541,
            UnitConv::LToGal => x / 3.78541,
        }
    }
}

/// One-argument float functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Math1 {
    Sqrt,
    Cbrt,
    Ln,
    Log2,
    Log10,
    Exp,
    Exp2,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
}

impl Math1 {
    fn apply(self, x: f64) -> f64 {
        match self {
            Math1::Sqrt => x.sqrt(),
            Math1::Cbrt => x.cbrt(),
            Math1::Ln => x.ln(),
            Math1::Log2 => x.log2(),
            Math1::Log10 => x.log10(),
            Math1::Exp => x.exp(),
            Math1::Exp2 => x.exp2(),
            Math1::Sin => x.sin(),
            Math1::Cos => x.cos(),
            Math1::Tan => x.tan(),
            Math1::Asin => x.asin(),
            Math1::Acos => x.acos(),
            Math1::Atan => x.atan(),
        }
    }
}

/// Accepted argument counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    Exactly(usize),
    AtLeast(usize),
}

impl Arity {
    /// Whether `n` arguments are accepted.
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exactly(k) => n == k,
            Arity::AtLeast(k) => n >= k,
        }
    }

    /// Human form, e.g. `1 argument`, `at least 1 argument`.
    pub fn describe(self) -> String {
        let (prefix, k) = match self {
            Arity::Exactly(k) => ("", k),
            Arity::AtLeast(k) => ("at least ", k),
        };
        let s = if k == 1 { "" } else { "s" };
        format!("{prefix}{k} argument{s}")
    }
}

/// (name, function, arity). Unqualified math names are the older spellings.
const TABLE: &[(&str, Func, Arity)] = &[
    ("cToF", Func::Unit(UnitConv::CToF), Arity::Exactly(1)),
    ("fToC", Func::Unit(UnitConv::FToC), Arity::Exactly(1)),
    (
        "psiToBar",
        Func::Unit(UnitConv::PsiToBar),
        Arity::Exactly(1),
    ),
    (
        "barToPsi",
        Func::Unit(UnitConv::BarToPsi),
        Arity::Exactly(1),
    ),
    ("inToCm", Func::Unit(UnitConv::InToCm), Arity::Exactly(1)),
    ("cmToIn", Func::Unit(UnitConv::CmToIn), Arity::Exactly(1)),
    ("ftToM", Func::Unit(UnitConv::FtToM), Arity::Exactly(1)),
    ("mToFt", Func::Unit(UnitConv::MToFt), Arity::Exactly(1)),
    ("lbToKg", Func::Unit(UnitConv::LbToKg), Arity::Exactly(1)),
    ("kgToLb", Func::Unit(UnitConv::KgToLb), Arity::Exactly(1)),
    ("galToL", Func::Unit(UnitConv::GalToL), Arity::Exactly(1)),
    ("lToGal", Func::Unit(UnitConv::LToGal), Arity::Exactly(1)),
    ("scale", Func::Scale, Arity::Exactly(5)),
    ("round_n", Func::RoundN, Arity::Exactly(2)),
    ("round", Func::Round, Arity::Exactly(1)),
    ("floor", Func::Floor, Arity::Exactly(1)),
    ("ceil", Func::Ceil, Arity::Exactly(1)),
    ("math::abs", Func::Abs, Arity::Exactly(1)),
    ("abs", Func::Abs, Arity::Exactly(1)),
    ("math::sqrt", Func::Math1(Math1::Sqrt), Arity::Exactly(1)),
    ("sqrt", Func::Math1(Math1::Sqrt), Arity::Exactly(1)),
    ("math::cbrt", Func::Math1(Math1::Cbrt), Arity::Exactly(1)),
    ("cbrt", Func::Math1(Math1::Cbrt), Arity::Exactly(1)),
    ("math::ln", Func::Math1(Math1::Ln), Arity::Exactly(1)),
    ("ln", Func::Math1(Math1::Ln), Arity::Exactly(1)),
    ("math::log2", Func::Math1(Math1::Log2), Arity::Exactly(1)),
    ("log2", Func::Math1(Math1::Log2), Arity::Exactly(1)),
    ("math::log10", Func::Math1(Math1::Log10), Arity::Exactly(1)),
    ("log10", Func::Math1(Math1::Log10), Arity::Exactly(1)),
    ("math::log", Func::Log, Arity::Exactly(2)),
    ("log", Func::Log, Arity::Exactly(2)),
    ("math::exp", Func::Math1(Math1::Exp), Arity::Exactly(1)),
    ("exp", Func::Math1(Math1::Exp), Arity::Exactly(1)),
    ("math::exp2", Func::Math1(Math1::Exp2), Arity::Exactly(1)),
    ("exp2", Func::Math1(Math1::Exp2), Arity::Exactly(1)),
    ("math::pow", Func::Pow, Arity::Exactly(2)),
    ("pow", Func::Pow, Arity::Exactly(2)),
    ("math::sin", Func::Math1(Math1::Sin), Arity::Exactly(1)),
    ("sin", Func::Math1(Math1::Sin), Arity::Exactly(1)),
    ("math::cos", Func::Math1(Math1::Cos), Arity::Exactly(1)),
    ("cos", Func::Math1(Math1::Cos), Arity::Exactly(1)),
    ("math::tan", Func::Math1(Math1::Tan), Arity::Exactly(1)),
    ("tan", Func::Math1(Math1::Tan), Arity::Exactly(1)),
    ("math::asin", Func::Math1(Math1::Asin), Arity::Exactly(1)),
    ("asin", Func::Math1(Math1::Asin), Arity::Exactly(1)),
    ("math::acos", Func::Math1(Math1::Acos), Arity::Exactly(1)),
    ("acos", Func::Math1(Math1::Acos), Arity::Exactly(1)),
    ("math::atan", Func::Math1(Math1::Atan), Arity::Exactly(1)),
    ("atan", Func::Math1(Math1::Atan), Arity::Exactly(1)),
    ("math::atan2", Func::Atan2, Arity::Exactly(2)),
    ("atan2", Func::Atan2, Arity::Exactly(2)),
    ("math::hypot", Func::Hypot, Arity::Exactly(2)),
    ("hypot", Func::Hypot, Arity::Exactly(2)),
    ("len", Func::Len, Arity::AtLeast(1)),
    ("str::to_lowercase", Func::Lower, Arity::Exactly(1)),
    ("str::to_uppercase", Func::Upper, Arity::Exactly(1)),
    ("str::trim", Func::Trim, Arity::Exactly(1)),
    ("str::from", Func::From, Arity::Exactly(1)),
    ("str::substring", Func::Substring, Arity::Exactly(3)),
    ("if", Func::If, Arity::Exactly(3)),
    ("min", Func::Min, Arity::AtLeast(1)),
    ("max", Func::Max, Arity::AtLeast(1)),
    ("contains", Func::Contains, Arity::Exactly(2)),
    ("contains_any", Func::ContainsAny, Arity::Exactly(2)),
    ("typeof", Func::TypeOf, Arity::Exactly(1)),
];

/// Functions that exist only in data flow graphs.
const GRAPH_ONLY: &[&str] = &[
    "str::regex_matches",
    "str::regex_replace",
    "average",
    "sum",
    "count",
    "first",
    "last",
];

/// Looks a function up by its exact (case-sensitive) name.
pub fn lookup(name: &str) -> Option<(Func, Arity)> {
    TABLE
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, f, a)| (*f, *a))
}

/// The table's `&'static str` spelling of a known name (for error messages).
pub fn canonical_name(name: &str) -> &'static str {
    TABLE
        .iter()
        .find(|(n, _, _)| *n == name)
        .map_or("function", |(n, _, _)| *n)
}

/// Whether the name is a documented graph-only function.
pub fn is_graph_only(name: &str) -> bool {
    GRAPH_ONLY.contains(&name)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest known function name, if reasonably close.
pub fn suggest(name: &str) -> Option<&'static str> {
    let lower = name.to_lowercase();
    if let Some((n, _, _)) = TABLE.iter().find(|(n, _, _)| n.to_lowercase() == lower) {
        return Some(n);
    }
    let qualified: Vec<String> = ["math::", "str::"]
        .iter()
        .map(|p| format!("{p}{lower}"))
        .collect();
    if let Some((n, _, _)) = TABLE
        .iter()
        .find(|(n, _, _)| qualified.iter().any(|q| *q == n.to_lowercase()))
    {
        return Some(n);
    }
    TABLE
        .iter()
        .map(|(n, _, _)| (levenshtein(&lower, &n.to_lowercase()), *n))
        .filter(|(d, n)| *d <= 2 && *d < n.len() / 2 + 1)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

fn num(name: &str, v: &Value) -> Result<f64, String> {
    v.as_f64()
        .ok_or_else(|| format!("{name} expects a number, got {}", v.type_name()))
}

fn int(name: &str, v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(format!("{name} expects an int, got {}", other.type_name())),
    }
}

fn string<'a>(name: &str, v: &'a Value) -> Result<&'a str, String> {
    match v {
        Value::Str(s) => Ok(s),
        other => Err(format!(
            "{name} expects a string, got {}",
            other.type_name()
        )),
    }
}

fn to_int(name: &str, f: f64) -> Result<Value, String> {
    if (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) {
        Ok(Value::Int(f as i64))
    } else {
        Err(format!("{name}: {f} does not fit a 64-bit integer"))
    }
}

fn min_max<A: AsRef<Value>>(name: &str, args: &[A], want_max: bool) -> Result<Value, String> {
    match args {
        [one] => match one.as_ref() {
            Value::Tuple(items) => best_of(name, items, want_max),
            single => best_of(name, [single], want_max),
        },
        _ => best_of(name, args.iter().map(AsRef::as_ref), want_max),
    }
}

fn best_of<'v>(
    name: &str,
    items: impl IntoIterator<Item = &'v Value>,
    want_max: bool,
) -> Result<Value, String> {
    let mut best: Option<&Value> = None;
    for v in items {
        if matches!(v, Value::Empty) {
            continue;
        }
        num(name, v)?;
        best = Some(match best {
            None => v,
            Some(b) => {
                let better = match (b, v) {
                    (Value::Int(x), Value::Int(y)) => {
                        if want_max {
                            y > x
                        } else {
                            y < x
                        }
                    }
                    _ => {
                        let (x, y) = (
                            b.as_f64().unwrap_or(f64::NAN),
                            v.as_f64().unwrap_or(f64::NAN),
                        );
                        if want_max {
                            y > x
                        } else {
                            y < x
                        }
                    }
                };
                if better {
                    v
                } else {
                    b
                }
            }
        });
    }
    Ok(best.cloned().unwrap_or(Value::Empty))
}

fn contains(name: &str, coll: &Value, v: &Value) -> Result<bool, String> {
    match (coll, v) {
        (Value::Tuple(items), v) => Ok(items.iter().any(|x| x.loose_eq(v))),
        (Value::Str(s), Value::Str(sub)) => Ok(s.contains(sub.as_str())),
        (Value::Str(_), other) => Err(format!(
            "{name}: a string can only contain a string, got {}",
            other.type_name()
        )),
        (other, _) => Err(format!(
            "{name} expects a tuple (or a string), got {}",
            other.type_name()
        )),
    }
}

/// Calls a function on evaluated arguments. `if` is not handled here.
pub fn call<A: AsRef<Value>>(name: &str, f: Func, args: &[A]) -> Result<Value, String> {
    let arg = |k: usize| args.get(k).map_or(&Value::Empty, AsRef::as_ref);
    if f == Func::TypeOf {
        return Ok(Value::Str(arg(0).type_name().to_string()));
    }
    let any_empty = args.iter().any(|a| matches!(a.as_ref(), Value::Empty));
    if any_empty && !matches!(f, Func::Min | Func::Max) {
        return Ok(Value::Empty);
    }
    let a0 = arg(0);
    let a1 = arg(1);
    Ok(match f {
        Func::Unit(u) => Value::Float(u.apply(num(name, a0)?)),
        Func::Scale => {
            let x = num(name, a0)?;
            let lo = num(name, a1)?;
            let hi = num(name, arg(2))?;
            let dlo = num(name, arg(3))?;
            let dhi = num(name, arg(4))?;
            if hi == lo {
                return Err(format!("{name}: source range is empty (srcLo == srcHi)"));
            }
            Value::Float(dlo + (x - lo) * (dhi - dlo) / (hi - lo))
        }
        Func::RoundN => {
            let d = int(name, a1)?;
            if !(0..=15).contains(&d) {
                return Err(format!(
                    "{name}: decimals must be between 0 and 15, got {d}"
                ));
            }
            match a0 {
                Value::Int(i) => Value::Int(*i),
                other => {
                    let x = num(name, other)?;
                    let p = 10f64.powi(d as i32);
                    Value::Float((x * p).round() / p)
                }
            }
        }
        Func::Round | Func::Floor | Func::Ceil => match a0 {
            Value::Int(i) => Value::Int(*i),
            other => {
                let x = num(name, other)?;
                let r = match f {
                    Func::Round => x.round(),
                    Func::Floor => x.floor(),
                    _ => x.ceil(),
                };
                to_int(name, r)?
            }
        },
        Func::Abs => match a0 {
            Value::Int(i) => Value::Int(
                i.checked_abs()
                    .ok_or_else(|| format!("{name}: integer overflow"))?,
            ),
            other => Value::Float(num(name, other)?.abs()),
        },
        Func::Math1(m) => Value::Float(m.apply(num(name, a0)?)),
        Func::Log => Value::Float(num(name, a0)?.ln() / num(name, a1)?.ln()),
        Func::Pow => Value::Float(num(name, a0)?.powf(num(name, a1)?)),
        Func::Atan2 => Value::Float(num(name, a0)?.atan2(num(name, a1)?)),
        Func::Hypot => Value::Float(num(name, a0)?.hypot(num(name, a1)?)),
        Func::Len => {
            if args.len() > 1 {
                Value::Int(args.len() as i64)
            } else {
                match a0 {
                    Value::Str(s) => Value::Int(s.chars().count() as i64),
                    Value::Tuple(t) => Value::Int(t.len() as i64),
                    other => {
                        return Err(format!(
                            "{name} expects a string or a tuple, got {}",
                            other.type_name()
                        ))
                    }
                }
            }
        }
        Func::Lower => Value::Str(string(name, a0)?.to_lowercase()),
        Func::Upper => Value::Str(string(name, a0)?.to_uppercase()),
        Func::Trim => Value::Str(string(name, a0)?.trim().to_string()),
        Func::From => Value::Str(a0.to_text()?),
        Func::Substring => {
            let s = string(name, a0)?;
            let start = int(name, a1)?;
            let end = int(name, arg(2))?;
            if start < 0 || end < 0 {
                return Err(format!("{name}: indices must not be negative"));
            }
            let n = s.chars().count();
            let end = (end as usize).min(n);
            let start = (start as usize).min(end);
            Value::Str(s.chars().skip(start).take(end - start).collect())
        }
        Func::Min => min_max(name, args, false)?,
        Func::Max => min_max(name, args, true)?,
        Func::Contains => Value::Bool(contains(name, a0, a1)?),
        Func::ContainsAny => {
            let cands: &[Value] = match a1 {
                Value::Tuple(c) => c,
                single => std::slice::from_ref(single),
            };
            let mut any = false;
            for c in cands {
                if contains(name, a0, c)? {
                    any = true;
                    break;
                }
            }
            Value::Bool(any)
        }
        Func::If | Func::TypeOf => return Err(format!("{name}: internal dispatch error")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, args: &[Value]) -> Value {
        let (f, a) = lookup(name).unwrap();
        assert!(a.accepts(args.len()));
        call(name, f, args).unwrap()
    }

    fn f(name: &str, x: f64) -> f64 {
        match c(name, &[Value::Float(x)]) {
            Value::Float(v) => v,
            other => panic!("{other:?}"),
        }
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn unit_conversions() {
        close(f("cToF", 100.0), 212.0);
        close(f("fToC", 212.0), 100.0);
        close(f("psiToBar", 100.0), 6.89476);
        close(f("barToPsi", 6.89476), 100.0);
        close(f("inToCm", 10.0), 25.4);
        close(f("cmToIn", 25.4), 10.0);
        close(f("ftToM", 10.0), 3.048);
        close(f("mToFt", 3.048), 10.0);
        close(f("lbToKg", 10.0), 4.53592);
        close(f("kgToLb", 4.53592), 10.0);
        close(f("galToL", 10.0), 37.8541);
        close(f("lToGal", 37.8541), 10.0);
        assert_eq!(c("cToF", &[Value::Int(0)]), Value::Float(32.0));
        assert!(lookup("kmToMiles").is_none());
    }

    #[test]
    fn rounding() {
        assert_eq!(c("round", &[Value::Float(2.5)]), Value::Int(3));
        assert_eq!(c("round", &[Value::Float(-2.5)]), Value::Int(-3));
        assert_eq!(c("floor", &[Value::Float(-1.5)]), Value::Int(-2));
        assert_eq!(c("ceil", &[Value::Float(1.2)]), Value::Int(2));
        assert_eq!(
            c("round_n", &[Value::Float(1.23456), Value::Int(2)]),
            Value::Float(1.23)
        );
        let (rn, _) = lookup("round_n").unwrap();
        assert!(call("round_n", rn, &[Value::Float(1.0), Value::Int(16)]).is_err());
    }

    #[test]
    fn math() {
        assert_eq!(c("abs", &[Value::Int(-3)]), Value::Int(3));
        assert_eq!(c("math::abs", &[Value::Float(-3.5)]), Value::Float(3.5));
        close(f("math::sqrt", 16.0), 4.0);
        assert!(f("sqrt", -1.0).is_nan());
        close(f("math::cbrt", 27.0), 3.0);
        close(f("math::exp2", 3.0), 8.0);
        close(f("math::log10", 1000.0), 3.0);
        match c("math::log", &[Value::Int(8), Value::Int(2)]) {
            Value::Float(v) => close(v, 3.0),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c("math::hypot", &[Value::Int(3), Value::Int(4)]),
            Value::Float(5.0)
        );
        assert_eq!(
            c(
                "scale",
                &[
                    Value::Int(5),
                    Value::Int(0),
                    Value::Int(10),
                    Value::Int(0),
                    Value::Int(100)
                ]
            ),
            Value::Float(50.0)
        );
    }

    #[test]
    fn strings_and_collections() {
        let s = |x: &str| Value::Str(x.into());
        assert_eq!(c("str::to_uppercase", &[s("abc")]), s("ABC"));
        assert_eq!(c("str::trim", &[s("  a ")]), s("a"));
        assert_eq!(c("str::from", &[Value::Float(1.5)]), s("1.5"));
        assert_eq!(
            c(
                "str::substring",
                &[s("héllo"), Value::Int(1), Value::Int(3)]
            ),
            s("él")
        );
        assert_eq!(c("len", &[s("héllo")]), Value::Int(5));
        assert_eq!(
            c("len", &[Value::Int(1), Value::Int(2), Value::Int(3)]),
            Value::Int(3)
        );
        let t = Value::Tuple(vec![Value::Float(2.34), Value::Float(12.3), Value::Int(32)]);
        assert_eq!(c("min", std::slice::from_ref(&t)), Value::Float(2.34));
        assert_eq!(c("max", std::slice::from_ref(&t)), Value::Int(32));
        assert_eq!(
            c("max", &[Value::Int(1), Value::Float(1.5)]),
            Value::Float(1.5)
        );
        assert_eq!(
            c("contains", &[t.clone(), Value::Float(32.0)]),
            Value::Bool(true)
        );
        assert_eq!(
            c(
                "contains_any",
                &[t, Value::Tuple(vec![Value::Int(7), Value::Float(12.3)])]
            ),
            Value::Bool(true)
        );
        assert_eq!(c("typeof", &[Value::Empty]), s("empty"));
        assert_eq!(c("cToF", &[Value::Empty]), Value::Empty);
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("ctoF"), Some("cToF"));
        assert_eq!(suggest("to_lowercase"), Some("str::to_lowercase"));
        assert_eq!(suggest("roundn"), Some("round_n"));
        assert_eq!(suggest("zzzzzzzz"), None);
    }
}
