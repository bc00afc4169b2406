//! Tokenizer for expressions. Columns are 1-based character positions.

use super::error::LocalError;

/// A token kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Int(i64),
    Float(f64),
    Str(String),
    True,
    False,
    /// Function name, possibly qualified (`math::abs`).
    Ident(String),
    /// `$n` (1-based).
    Input(usize),
    LParen,
    RParen,
    Comma,
    Not,
    Minus,
    Plus,
    Star,
    Slash,
    Percent,
    Caret,
    Lt,
    Gt,
    Le,
    Ge,
    EqEq,
    Ne,
    AndAnd,
    OrOr,
    Eof,
}

impl Tok {
    /// How the token is shown in error messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Int(i) => format!("'{i}'"),
            Tok::Float(f) => format!("'{f}'"),
            Tok::Str(s) => format!("string \"{s}\""),
            Tok::True => "'true'".into(),
            Tok::False => "'false'".into(),
            Tok::Ident(s) => format!("'{s}'"),
            Tok::Input(n) => format!("'${n}'"),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::Not => "'!'".into(),
            Tok::Minus => "'-'".into(),
            Tok::Plus => "'+'".into(),
            Tok::Star => "'*'".into(),
            Tok::Slash => "'/'".into(),
            Tok::Percent => "'%'".into(),
            Tok::Caret => "'^'".into(),
            Tok::Lt => "'<'".into(),
            Tok::Gt => "'>'".into(),
            Tok::Le => "'<='".into(),
            Tok::Ge => "'>='".into(),
            Tok::EqEq => "'=='".into(),
            Tok::Ne => "'!='".into(),
            Tok::AndAnd => "'&&'".into(),
            Tok::OrOr => "'||'".into(),
            Tok::Eof => "end of expression".into(),
        }
    }
}

/// A token with its column.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub col: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Splits an expression into tokens (always ending with `Eof`).
pub fn tokenize(src: &str) -> Result<Vec<Token>, LocalError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).copied();
        let (tok, len) = match c {
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            ',' => (Tok::Comma, 1),
            '+' => (Tok::Plus, 1),
            '-' => (Tok::Minus, 1),
            '*' => (Tok::Star, 1),
            '/' => (Tok::Slash, 1),
            '%' => (Tok::Percent, 1),
            '^' => (Tok::Caret, 1),
            '!' if next == Some('=') => (Tok::Ne, 2),
            '!' => (Tok::Not, 1),
            '<' if next == Some('=') => (Tok::Le, 2),
            '<' => (Tok::Lt, 1),
            '>' if next == Some('=') => (Tok::Ge, 2),
            '>' => (Tok::Gt, 1),
            '=' if next == Some('=') => (Tok::EqEq, 2),
            '=' => return Err(LocalError::new("expected '==' (single '=' is not an operator)", col)),
            '&' if next == Some('&') => (Tok::AndAnd, 2),
            '&' => return Err(LocalError::new("expected '&&'", col)),
            '|' if next == Some('|') => (Tok::OrOr, 2),
            '|' => return Err(LocalError::new("expected '||'", col)),
            '?' => {
                return Err(LocalError::new(
                    "'?' is not an operator in expressions; write '<path> ? $last' in inputs ('??' is data-flow-graph only)",
                    col,
                ))
            }
            '"' | '\'' => {
                let (s, len) = lex_string(&chars, i)?;
                (Tok::Str(s), len)
            }
            '$' => {
                let digits: String = chars[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .collect();
                let n: usize = digits.parse().unwrap_or(0);
                if digits.is_empty() || n == 0 {
                    return Err(LocalError::new(
                        "expected an input reference $1, $2, ... (paths belong in 'inputs')",
                        col,
                    ));
                }
                (Tok::Input(n), 1 + digits.len())
            }
            c if c.is_ascii_digit() || (c == '.' && next.is_some_and(|d| d.is_ascii_digit())) => {
                lex_number(&chars, i)?
            }
            c if is_ident_start(c) => {
                let mut j = i;
                loop {
                    while j < chars.len() && is_ident_char(chars[j]) {
                        j += 1;
                    }
                    if j + 2 < chars.len()
                        && chars[j] == ':'
                        && chars[j + 1] == ':'
                        && is_ident_start(chars[j + 2])
                    {
                        j += 2;
                        continue;
                    }
                    break;
                }
                let word: String = chars[i..j].iter().collect();
                let tok = match word.as_str() {
                    "true" => Tok::True,
                    "false" => Tok::False,
                    _ => Tok::Ident(word),
                };
                (tok, j - i)
            }
            other => {
                return Err(LocalError::new(
                    format!("unexpected character '{other}'"),
                    col,
                ))
            }
        };
        out.push(Token { tok, col });
        i += len;
    }
    out.push(Token {
        tok: Tok::Eof,
        col: chars.len() + 1,
    });
    Ok(out)
}

fn lex_string(chars: &[char], start: usize) -> Result<(String, usize), LocalError> {
    let quote = chars[start];
    let mut s = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        let c = chars[i];
        if c == quote {
            return Ok((s, i + 1 - start));
        }
        if c == '\\' {
            let Some(&e) = chars.get(i + 1) else { break };
            s.push(match e {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                '\\' => '\\',
                '"' => '"',
                '\'' => '\'',
                other => {
                    return Err(LocalError::new(
                        format!("unknown escape '\\{other}'"),
                        i + 1,
                    ))
                }
            });
            i += 2;
            continue;
        }
        s.push(c);
        i += 1;
    }
    Err(LocalError::new("unterminated string", start + 1))
}

fn lex_number(chars: &[char], start: usize) -> Result<(Tok, usize), LocalError> {
    let mut i = start;
    let digits = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_ascii_digit() {
            *i += 1;
        }
    };
    digits(&mut i);
    let mut is_float = false;
    if i < chars.len() && chars[i] == '.' {
        if !chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
            return Err(LocalError::new("expected a digit after '.'", i + 2));
        }
        is_float = true;
        i += 1;
        digits(&mut i);
    }
    if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
        let mut j = i + 1;
        if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
            j += 1;
        }
        if !chars.get(j).is_some_and(|c| c.is_ascii_digit()) {
            return Err(LocalError::new("expected exponent digits", j + 1));
        }
        is_float = true;
        i = j;
        digits(&mut i);
    }
    if i < chars.len() && is_ident_char(chars[i]) {
        return Err(LocalError::new(
            format!("unexpected character '{}' in number", chars[i]),
            i + 1,
        ));
    }
    let text: String = chars[start..i].iter().collect();
    let tok = if is_float {
        match text.parse::<f64>() {
            Ok(f) => Tok::Float(f),
            Err(_) => return Err(LocalError::new("invalid number", start + 1)),
        }
    } else {
        match text.parse::<i64>() {
            Ok(n) => Tok::Int(n),
            Err(_) => {
                return Err(LocalError::new(
                    "integer literal out of 64-bit range",
                    start + 1,
                ))
            }
        }
    };
    Ok((tok, i - start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        tokenize(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn operators_and_literals() {
        assert_eq!(
            toks("$1*2^3 <= 4.5 && !true || \"a\\\"b\" != 'c'"),
            vec![
                Tok::Input(1),
                Tok::Star,
                Tok::Int(2),
                Tok::Caret,
                Tok::Int(3),
                Tok::Le,
                Tok::Float(4.5),
                Tok::AndAnd,
                Tok::Not,
                Tok::True,
                Tok::OrOr,
                Tok::Str("a\"b".into()),
                Tok::Ne,
                Tok::Str("c".into()),
                Tok::Eof
            ]
        );
        assert_eq!(
            toks("1e3 .5"),
            vec![Tok::Float(1000.0), Tok::Float(0.5), Tok::Eof]
        );
    }

    #[test]
    fn qualified_identifiers() {
        assert_eq!(
            toks("math::abs(str::len)"),
            vec![
                Tok::Ident("math::abs".into()),
                Tok::LParen,
                Tok::Ident("str::len".into()),
                Tok::RParen,
                Tok::Eof
            ]
        );
    }

    #[test]
    fn columns() {
        let t = tokenize("  $12 +x").unwrap();
        assert_eq!(t[0].col, 3);
        assert_eq!(t[0].tok, Tok::Input(12));
        assert_eq!(t[1].col, 7);
        assert_eq!(t[2].col, 8);
        assert_eq!(t[3].col, 9);
    }

    #[test]
    fn errors() {
        let e = tokenize("$1 = 2").unwrap_err();
        assert_eq!(e.column, Some(4));
        let e = tokenize("'abc").unwrap_err();
        assert_eq!(e.message, "unterminated string");
        assert_eq!(e.column, Some(1));
        assert!(tokenize("$0").is_err());
        assert!(tokenize("$x").is_err());
        assert!(tokenize("99999999999999999999").is_err());
        assert!(tokenize("1.").is_err());
        assert!(tokenize("a ?? b").is_err());
        assert!(tokenize("3x").is_err());
    }
}
