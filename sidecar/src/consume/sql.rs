//! SQL92 message filters, as RocketMQ defines them: expressions over a message's user properties and
//! its tag (`TAGS`), e.g. `a > 5 AND region IN ('eu', 'us')`.
//!
//! Supported: `=`, `<>`/`!=`, `>`, `>=`, `<`, `<=`, `[NOT] BETWEEN x AND y`, `[NOT] IN (...)`,
//! `IS [NOT] NULL`, `[NOT] CONTAINS` / `STARTSWITH` / `ENDSWITH` 'text', `AND`, `OR`, `NOT`,
//! parentheses, string literals in single quotes (`''` escapes a quote), integer and decimal
//! numbers, `TRUE`, `FALSE`. Keywords are case-insensitive; property names are not.
//!
//! Property values are strings; a comparison with a number compares numerically when the value
//! parses as one. Logic is three-valued like SQL: a comparison with a missing property is unknown,
//! `NOT unknown` is unknown, and only a definite true selects the message.

use std::collections::HashMap;

/// Longest expression accepted.
pub const MAX_LEN: usize = 4096;
/// Deepest nesting accepted (parentheses and NOTs), so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

/// A parsed SQL92 filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `a OR b`.
    Or(Box<Expr>, Box<Expr>),
    /// `a AND b`.
    And(Box<Expr>, Box<Expr>),
    /// `NOT a`.
    Not(Box<Expr>),
    /// A constant `TRUE` / `FALSE`.
    Bool(bool),
    /// `x op y`.
    Compare(Operand, Op, Operand),
    /// `x BETWEEN lo AND hi`.
    Between(Operand, Operand, Operand),
    /// `x IN (a, b, ...)`.
    In(Operand, Vec<Literal>),
    /// `x IS NULL`.
    IsNull(Operand),
    /// `x CONTAINS / STARTSWITH / ENDSWITH 'text'`.
    Text(Operand, TextOp, String),
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`.
    Eq,
    /// `<>` or `!=`.
    Ne,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
}

/// String predicates of RocketMQ 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextOp {
    /// Substring.
    Contains,
    /// Prefix.
    StartsWith,
    /// Suffix.
    EndsWith,
}

/// A constant.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `'text'`.
    Str(String),
    /// A number.
    Num(f64),
    /// `NULL`.
    Null,
}

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A message property (or `TAGS`).
    Property(String),
    /// A constant.
    Literal(Literal),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Num(f64),
    Op(Op),
    LParen,
    RParen,
    Comma,
}

fn tokenize(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => (out.push(Token::LParen), i += 1).1,
            ')' => (out.push(Token::RParen), i += 1).1,
            ',' => (out.push(Token::Comma), i += 1).1,
            '=' => (out.push(Token::Op(Op::Eq)), i += 1).1,
            '<' | '>' | '!' => {
                let next = chars.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    ('<', Some('>')) => (Op::Ne, 2),
                    ('<', Some('=')) => (Op::Le, 2),
                    ('<', _) => (Op::Lt, 1),
                    ('>', Some('=')) => (Op::Ge, 2),
                    ('>', _) => (Op::Gt, 1),
                    ('!', Some('=')) => (Op::Ne, 2),
                    _ => return Err(format!("unexpected `{c}` at position {i}")),
                };
                out.push(Token::Op(op));
                i += len;
            }
            '\'' => {
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string literal".into()),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            text.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            text.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push(Token::Str(text));
            }
            c if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let n = text.parse::<f64>().map_err(|_| format!("bad number {text}"))?;
                out.push(Token::Num(n));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.') {
                    i += 1;
                }
                out.push(Token::Ident(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected `{other}` at position {i}")),
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Ident(w)) if w.eq_ignore_ascii_case(word))
    }

    fn eat_keyword(&mut self, word: &str) -> bool {
        let yes = self.keyword(word);
        if yes {
            self.at += 1;
        }
        yes
    }

    fn expect_keyword(&mut self, word: &str) -> Result<(), String> {
        if self.eat_keyword(word) { Ok(()) } else { Err(format!("expected {word} {}", self.here())) }
    }

    fn here(&self) -> String {
        match self.peek() {
            None => "at the end".into(),
            Some(t) => format!("near {t:?}"),
        }
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH { Err(format!("nested deeper than {MAX_DEPTH} levels")) } else { Ok(()) }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.eat_keyword("OR") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.not()?;
        while self.eat_keyword("AND") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.eat_keyword("NOT") {
            self.enter()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.predicate()
    }

    fn predicate(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(&Token::LParen) {
            self.at += 1;
            self.enter()?;
            let inner = self.or()?;
            self.depth -= 1;
            if self.peek() != Some(&Token::RParen) {
                return Err(format!("expected `)` {}", self.here()));
            }
            self.at += 1;
            return Ok(inner);
        }
        if self.eat_keyword("TRUE") {
            return Ok(Expr::Bool(true));
        }
        if self.eat_keyword("FALSE") {
            return Ok(Expr::Bool(false));
        }
        let left = self.operand()?;
        if let Some(Token::Op(op)) = self.peek().cloned() {
            self.at += 1;
            return Ok(Expr::Compare(left, op, self.operand()?));
        }
        if self.eat_keyword("IS") {
            let negated = self.eat_keyword("NOT");
            self.expect_keyword("NULL")?;
            let e = Expr::IsNull(left);
            return Ok(if negated { Expr::Not(Box::new(e)) } else { e });
        }
        let negated = self.eat_keyword("NOT");
        let e = if self.eat_keyword("BETWEEN") {
            let lo = self.operand()?;
            self.expect_keyword("AND")?;
            Expr::Between(left, lo, self.operand()?)
        } else if self.eat_keyword("IN") {
            Expr::In(left, self.list()?)
        } else if let Some(op) =
            [("CONTAINS", TextOp::Contains), ("STARTSWITH", TextOp::StartsWith), ("ENDSWITH", TextOp::EndsWith)]
                .into_iter()
                .find_map(|(w, op)| self.eat_keyword(w).then_some(op))
        {
            match self.operand()? {
                Operand::Literal(Literal::Str(s)) => Expr::Text(left, op, s),
                _ => return Err(format!("{op:?} needs a string literal")),
            }
        } else {
            return Err(format!("expected a comparison {}", self.here()));
        };
        Ok(if negated { Expr::Not(Box::new(e)) } else { e })
    }

    fn list(&mut self) -> Result<Vec<Literal>, String> {
        if self.peek() != Some(&Token::LParen) {
            return Err(format!("IN needs a parenthesised list {}", self.here()));
        }
        self.at += 1;
        let mut items = Vec::new();
        loop {
            match self.operand()? {
                Operand::Literal(l) => items.push(l),
                Operand::Property(p) => return Err(format!("IN lists hold constants, not the property {p}")),
            }
            match self.peek() {
                Some(Token::Comma) => self.at += 1,
                Some(Token::RParen) => {
                    self.at += 1;
                    return Ok(items);
                }
                _ => return Err(format!("expected `,` or `)` {}", self.here())),
            }
        }
    }

    fn operand(&mut self) -> Result<Operand, String> {
        let t = self.peek().cloned().ok_or_else(|| "the expression ends too early".to_string())?;
        self.at += 1;
        Ok(match t {
            Token::Str(s) => Operand::Literal(Literal::Str(s)),
            Token::Num(n) => Operand::Literal(Literal::Num(n)),
            Token::Ident(w) if w.eq_ignore_ascii_case("NULL") => Operand::Literal(Literal::Null),
            Token::Ident(w)
                if ["AND", "OR", "NOT", "IS", "IN", "BETWEEN"].iter().any(|k| w.eq_ignore_ascii_case(k)) =>
            {
                return Err(format!("expected a property or a value, found the keyword {w}"));
            }
            Token::Ident(w) => Operand::Property(w),
            other => return Err(format!("expected a property or a value, found {other:?}")),
        })
    }
}

/// Parses an expression.
pub fn parse(expression: &str) -> Result<Expr, String> {
    if expression.len() > MAX_LEN {
        return Err(format!("longer than {MAX_LEN} bytes"));
    }
    let tokens = tokenize(expression)?;
    if tokens.is_empty() {
        return Err("the expression is empty".into());
    }
    let mut p = Parser { tokens, at: 0, depth: 0 };
    let e = p.or()?;
    if p.at != p.tokens.len() {
        return Err(format!("unexpected text {}", p.here()));
    }
    Ok(e)
}

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
enum Value<'a> {
    Str(&'a str),
    Num(f64),
    Null,
}

fn value<'a>(o: &'a Operand, tag: &'a str, props: &'a HashMap<String, String>) -> Value<'a> {
    match o {
        Operand::Property(p) if p == "TAGS" => {
            if tag.is_empty() {
                Value::Null
            } else {
                Value::Str(tag)
            }
        }
        Operand::Property(p) => props.get(p).map_or(Value::Null, |v| Value::Str(v)),
        Operand::Literal(Literal::Str(s)) => Value::Str(s),
        Operand::Literal(Literal::Num(n)) => Value::Num(*n),
        Operand::Literal(Literal::Null) => Value::Null,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Num(n) => Some(*n),
        Value::Str(s) => s.trim().parse().ok(),
        Value::Null => None,
    }
}

fn compare(a: &Value, op: Op, b: &Value) -> Option<bool> {
    if matches!(a, Value::Null) || matches!(b, Value::Null) {
        return None;
    }
    let ordering = match (a, b) {
        (Value::Str(x), Value::Str(y)) if matches!(op, Op::Eq | Op::Ne) => Some(x.cmp(y)),
        _ => number(a).zip(number(b)).and_then(|(x, y)| x.partial_cmp(&y)),
    }?;
    use std::cmp::Ordering::*;
    Some(match op {
        Op::Eq => ordering == Equal,
        Op::Ne => ordering != Equal,
        Op::Gt => ordering == Greater,
        Op::Ge => ordering != Less,
        Op::Lt => ordering == Less,
        Op::Le => ordering != Greater,
    })
}

impl Expr {
    /// Whether a message with this tag and these properties is selected.
    pub fn matches(&self, tag: &str, props: &HashMap<String, String>) -> bool {
        self.eval(tag, props) == Some(true)
    }

    fn eval(&self, tag: &str, props: &HashMap<String, String>) -> Option<bool> {
        match self {
            Expr::Bool(b) => Some(*b),
            Expr::Not(e) => e.eval(tag, props).map(|b| !b),
            Expr::And(a, b) => match (a.eval(tag, props), b.eval(tag, props)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            Expr::Or(a, b) => match (a.eval(tag, props), b.eval(tag, props)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            Expr::Compare(a, op, b) => compare(&value(a, tag, props), *op, &value(b, tag, props)),
            Expr::Between(x, lo, hi) => {
                let v = value(x, tag, props);
                Some(compare(&v, Op::Ge, &value(lo, tag, props))? && compare(&v, Op::Le, &value(hi, tag, props))?)
            }
            Expr::In(x, items) => match value(x, tag, props) {
                Value::Null => None,
                v => Some(items.iter().any(|l| {
                    let item = value_of_literal(l);
                    compare(&v, Op::Eq, &item) == Some(true)
                })),
            },
            Expr::IsNull(x) => Some(value(x, tag, props) == Value::Null),
            Expr::Text(x, op, text) => match value(x, tag, props) {
                Value::Str(s) => Some(match op {
                    TextOp::Contains => s.contains(text.as_str()),
                    TextOp::StartsWith => s.starts_with(text.as_str()),
                    TextOp::EndsWith => s.ends_with(text.as_str()),
                }),
                _ => None,
            },
        }
    }
}

fn value_of_literal(l: &Literal) -> Value<'_> {
    match l {
        Literal::Str(s) => Value::Str(s),
        Literal::Num(n) => Value::Num(*n),
        Literal::Null => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn props(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn check(expr: &str, tag: &str, p: &[(&str, &str)]) -> bool {
        parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}")).matches(tag, &props(p))
    }

    #[test]
    fn the_issue_example() {
        let e = "a > 5 AND region IN ('eu','us')";
        assert!(check(e, "", &[("a", "6"), ("region", "eu")]));
        assert!(!check(e, "", &[("a", "5"), ("region", "eu")]));
        assert!(!check(e, "", &[("a", "9"), ("region", "apac")]));
        assert!(!check(e, "", &[("region", "us")]), "missing property: unknown, not selected");
    }

    #[test]
    fn operators_and_three_valued_logic() {
        let p = [("n", "10"), ("s", "hello"), ("f", "2.5")];
        for (e, want) in [
            ("n = 10", true),
            ("n <> 10", false),
            ("n != 9", true),
            ("n >= 10 AND n <= 10", true),
            ("f < 3", true),
            ("n BETWEEN 1 AND 10", true),
            ("n NOT BETWEEN 1 AND 10", false),
            ("s = 'hello'", true),
            ("s IN ('a', 'hello')", true),
            ("s NOT IN ('a', 'hello')", false),
            ("s CONTAINS 'ell'", true),
            ("s STARTSWITH 'he' AND s ENDSWITH 'lo'", true),
            ("s NOT CONTAINS 'x'", true),
            ("missing IS NULL", true),
            ("s IS NOT NULL", true),
            ("NOT missing = 1", false),
            ("missing = 1 OR n = 10", true),
            ("(n > 5 OR s = 'x') AND NOT (f > 3)", true),
            ("TAGS = 'TagA'", true),
            ("TRUE", true),
            ("s > 5", false),
        ] {
            assert_eq!(check(e, "TagA", &p), want, "{e}");
        }
    }

    #[test]
    fn malformed_expressions_are_refused() {
        for e in ["", "a >", "a = 'x", "a IN 'x'", "(a = 1", "a = 1 b", "a ~ 1", "AND", "a BETWEEN 1", "a CONTAINS 1"] {
            assert!(parse(e).is_err(), "{e:?} parsed");
        }
        assert!(parse(&"NOT ".repeat(100)).is_err());
        assert!(parse(&format!("{}a = 1{}", "(".repeat(100), ")".repeat(100))).is_err());
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,64}") {
            let _ = parse(&s);
        }
    }
}
