//! The fast path of [`Json::from_slice`]: a parser for the JSON telemetry
//! is usually made of (objects, arrays, plain strings, short numbers),
//! building the tree directly.
//!
//! Why: through serde's visitor, serde_json spent about half of the time of
//! a whole transformation parsing the message. This parser gives up
//! (`None`) on anything it does not handle exactly as serde_json does:
//! escapes in strings, numbers that need more than an exact
//! `significand × 10^exponent` (more than 15 digits, exponents beyond ±22),
//! `-0`, nesting deeper than 64, and every syntax error. The caller then parses
//! with serde_json, so what is accepted, the values and the error messages
//! stay serde_json's.

use serde_json::Number;

use super::json::{Json, Key};
use super::json_map::{has_duplicates, Map};

/// Nesting this parser handles (serde_json's own limit is 128).
const MAX_DEPTH: usize = 64;

/// Significands this parser reads: below 2^53, exact in an f64.
const MAX_DIGITS: usize = 15;

/// Powers of ten exact in an f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Parses `bytes`, or `None` when serde_json must decide.
pub(crate) fn parse(bytes: &[u8]) -> Option<Json> {
    // One UTF-8 check for the whole text instead of one per string (invalid
    // UTF-8 is an error for serde_json too, inside strings or out of them).
    let text = std::str::from_utf8(bytes).ok()?;
    let mut p = Parser {
        text,
        bytes,
        at: 0,
        fields: Vec::new(),
        items: Vec::new(),
    };
    let value = p.value(0)?;
    p.skip_whitespace();
    (p.at == bytes.len()).then_some(value)
}

struct Parser<'b> {
    text: &'b str,
    bytes: &'b [u8],
    at: usize,
    /// Fields of the objects being parsed (a stack shared by all depths),
    /// moved into an exactly sized vector when an object ends.
    fields: Vec<(&'b str, Json)>,
    /// The same for array items.
    items: Vec<Json>,
}

impl<'b> Parser<'b> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    /// Consumes `byte` after optional whitespace.
    fn eat(&mut self, byte: u8) -> Option<()> {
        self.skip_whitespace();
        (self.peek()? == byte).then(|| self.at += 1)
    }

    fn value(&mut self, depth: usize) -> Option<Json> {
        self.skip_whitespace();
        match self.peek()? {
            b'{' if depth < MAX_DEPTH => self.object(depth + 1),
            b'[' if depth < MAX_DEPTH => self.array(depth + 1),
            b'"' => self.string().map(|s| Json::String(s.to_owned())),
            b'-' | b'0'..=b'9' => self.number().map(Json::Number),
            b't' => self.literal(b"true", Json::Bool(true)),
            b'f' => self.literal(b"false", Json::Bool(false)),
            b'n' => self.literal(b"null", Json::Null),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8], value: Json) -> Option<Json> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| {
            self.at = end;
            value
        })
    }

    fn object(&mut self, depth: usize) -> Option<Json> {
        self.at += 1;
        let start = self.fields.len();
        self.skip_whitespace();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(Json::Object(Map::new()));
        }
        loop {
            self.skip_whitespace();
            let key = self.string()?;
            self.eat(b':')?;
            let value = self.value(depth)?;
            self.fields.push((key, value));
            self.skip_whitespace();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => break,
                _ => return None,
            }
        }
        self.at += 1;
        let unique = !has_duplicates(&self.fields[start..]);
        let fields = self.fields.drain(start..).map(|(k, v)| (Key::from(k), v));
        Some(Json::Object(match unique {
            true => Map::from_unique(fields),
            false => Map::from_parsed(fields.collect()),
        }))
    }

    fn array(&mut self, depth: usize) -> Option<Json> {
        self.at += 1;
        let start = self.items.len();
        self.skip_whitespace();
        if self.peek()? == b']' {
            self.at += 1;
            return Some(Json::Array(Vec::new()));
        }
        loop {
            let item = self.value(depth)?;
            self.items.push(item);
            self.skip_whitespace();
            match self.peek()? {
                b',' => self.at += 1,
                b']' => break,
                _ => return None,
            }
        }
        self.at += 1;
        Some(Json::Array(self.items.drain(start..).collect()))
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'b str> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.at + 1;
        let len = self.bytes[start..]
            .iter()
            .position(|b| matches!(b, b'"' | b'\\' | 0..=0x1f))?;
        let end = start + len;
        if self.bytes[end] != b'"' {
            return None;
        }
        self.at = end + 1;
        self.text.get(start..end)
    }

    /// A number as serde_json reads it, for the forms where its result is
    /// exact (so serde_json, with or without `float_roundtrip`, gives the
    /// same value).
    fn number(&mut self) -> Option<Number> {
        let negative = self.peek()? == b'-';
        self.at += usize::from(negative);
        let int_digits = self.digits();
        if int_digits == 0 || (int_digits > 1 && self.bytes[self.at - int_digits] == b'0') {
            return None;
        }
        let int_end = self.at;
        let frac_start = int_end + 1;
        let mut frac_digits = 0;
        if self.peek() == Some(b'.') {
            self.at += 1;
            frac_digits = self.digits();
            if frac_digits == 0 {
                return None;
            }
        }
        let mut exponent: i32 = 0;
        let has_exponent = matches!(self.peek(), Some(b'e' | b'E'));
        if has_exponent {
            exponent = self.exponent()?;
        }
        if int_digits + frac_digits > MAX_DIGITS {
            return None;
        }
        let mut significand: u64 = 0;
        let fraction = match frac_digits {
            0 => &[][..],
            n => &self.bytes[frac_start..frac_start + n],
        };
        let digits = self.bytes[int_end - int_digits..int_end]
            .iter()
            .chain(fraction);
        for d in digits {
            significand = significand * 10 + u64::from(d - b'0');
        }
        if frac_digits == 0 && !has_exponent {
            return match (negative, significand) {
                (false, s) => Some(s.into()),
                (true, 0) => None,
                (true, s) => Some(Number::from(-i64::try_from(s).ok()?)),
            };
        }
        let exponent = exponent - i32::try_from(frac_digits).ok()?;
        let pow = *POW10.get(usize::try_from(exponent.unsigned_abs()).ok()?)?;
        let mut f = significand as f64;
        if exponent >= 0 {
            f *= pow;
        } else {
            f /= pow;
        }
        Number::from_f64(if negative { -f } else { f })
    }

    /// Consumes ASCII digits; returns how many.
    fn digits(&mut self) -> usize {
        let rest = &self.bytes[self.at..];
        let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        self.at += n;
        n
    }

    /// `e`/`E`, an optional sign and at most two digits.
    fn exponent(&mut self) -> Option<i32> {
        self.at += 1;
        let negative = match self.peek()? {
            b'-' => true,
            b'+' => false,
            _ => {
                self.at -= 1;
                false
            }
        };
        self.at += 1;
        let start = self.at;
        let n = self.digits();
        if n == 0 || n > 2 {
            return None;
        }
        let text = std::str::from_utf8(&self.bytes[start..self.at]).ok()?;
        let e: i32 = text.parse().ok()?;
        Some(if negative { -e } else { e })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What serde_json makes of `text` through the same visitor.
    fn serde(text: &str) -> Option<Json> {
        serde_json::from_str::<Json>(text).ok()
    }

    /// The fast path either gives up or agrees with serde_json, bit for bit
    /// (`to_string` tells `1` from `1.0` and `0.0` from `-0.0`).
    fn agrees(text: &str) -> bool {
        match parse(text.as_bytes()) {
            None => true,
            Some(fast) => serde(text).is_some_and(|s| s.to_string() == fast.to_string()),
        }
    }

    #[test]
    fn parses_telemetry_as_serde_json_does() {
        let text = r#" {"deviceId":"press-17","t":{"value":71.25,"unit":"C"},"n":[1,-2,0,3.5e2,-0.001,1E-3,2e+2,18446744073709],"ok":true,"no":false,"x":null,"e":{},"a":[],"k":"é", "d":1,"d":2} "#;
        let fast = parse(text.as_bytes()).expect("handled");
        assert_eq!(fast.to_string(), serde(text).unwrap().to_string());
        assert_eq!(
            fast.to_string(),
            r#"{"deviceId":"press-17","t":{"value":71.25,"unit":"C"},"n":[1,-2,0,350.0,-0.001,0.001,200.0,18446744073709],"ok":true,"no":false,"x":null,"e":{},"a":[],"k":"é","d":2}"#
        );
    }

    #[test]
    fn gives_up_where_serde_json_must_decide() {
        for text in [
            r#""a\"b""#,
            r#""tab	""#,
            "-0",
            "1234567890123456",
            "1e23",
            "1e100",
            "0.1e-22",
            "[1,]",
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            "{1:2}",
            "01",
            "1.",
            ".5",
            "1e",
            "+1",
            "tru",
            "nul",
            "[1 2]",
            "1 2",
            "",
            "   ",
            "\u{feff}1",
            &format!("{}1{}", "[".repeat(65), "]".repeat(65)),
        ] {
            assert!(parse(text.as_bytes()).is_none(), "{text:?}");
        }
        assert!(parse(b"\"\xff\"").is_none());
        let nested = format!("{}1{}", "[".repeat(64), "]".repeat(64));
        assert!(parse(nested.as_bytes()).is_some());
    }

    /// Every number form and neighbourhood of the limits, and every
    /// one-byte cut and change of a document, against serde_json.
    #[test]
    fn agrees_with_serde_json_or_gives_up() {
        let mut texts: Vec<String> = Vec::new();
        for int in ["0", "7", "12", "999999999999999", "9007199254740993", "100"] {
            for frac in ["", ".0", ".5", ".000001", ".123456789"] {
                for exp in ["", "e0", "e22", "e-22", "E+3", "e-5", "e23", "e-23", "e308"] {
                    for sign in ["", "-"] {
                        texts.push(format!("{sign}{int}{frac}{exp}"));
                    }
                }
            }
        }
        for text in &texts {
            assert!(agrees(text), "{text}");
        }
        let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/message");
        for entry in std::fs::read_dir(corpus).unwrap() {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            let payload = data.splitn(2, |b| *b == 0).last().unwrap_or_default();
            if let Ok(text) = std::str::from_utf8(payload) {
                assert!(agrees(text), "{text}");
            }
        }
        let doc = r#"{"a":[1,2.5,{"b":"c"}],"d":null,"e":true}"#;
        for cut in 0..doc.len() {
            assert!(agrees(&doc[..cut]), "{}", &doc[..cut]);
            for byte in [b'"', b',', b':', b'}', b']', b'x', b'1', b' ', b'\\'] {
                let mut changed = doc.as_bytes().to_vec();
                changed[cut] = byte;
                let changed = String::from_utf8(changed).unwrap();
                assert!(agrees(&changed), "{changed}");
            }
        }
    }
}
