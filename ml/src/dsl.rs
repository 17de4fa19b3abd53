//! The analysts' rule language.
//!
//! ```text
//! rule    := action "if" condition
//! action  := "allow" | "review" | "decline" | "block"        (block is decline)
//! cond    := or
//! or      := and ("or" and)*
//! and     := not ("and" not)*
//! not     := "not" not | compare
//! compare := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?   a bare sum is refused
//! sum     := product (("+" | "-") product)*
//! product := unary (("*" | "/") unary)*
//! unary   := "-" unary | number | name | "(" cond ")"
//! ```
//!
//! Names are the feature names of the feature schema plus `score`. A rule is compiled once (names
//! resolved to indexes, types checked) and evaluated without allocation. Every error carries the
//! byte position where it was found.

use serde::{Deserialize, Serialize};

/// Longest rule source accepted.
pub const RULE_SOURCE_LENGTH_MAX: usize = 1_000;
/// Deepest nesting accepted (keeps the recursive parser's stack bounded).
const NESTING_MAX: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    Allow,
    Decline,
    Review,
}

impl RuleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Allow => "allow",
            RuleAction::Decline => "decline",
            RuleAction::Review => "review",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at position {position}: {message}")]
pub struct RuleError {
    /// Byte offset in the source.
    pub position: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Number(f64),
    /// Index into the variables: the features, then the score.
    Variable(usize),
    Negate(Box<Value>),
    Arithmetic(Box<Value>, ArithmeticOp, Box<Value>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ArithmeticOp {
    Add,
    Subtract,
    Multiply,
    Divide,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CompareOp {
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
    Equal,
    NotEqual,
}

#[derive(Debug, Clone, PartialEq)]
enum Condition {
    Compare(Value, CompareOp, Value),
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
    Not(Box<Condition>),
}

/// A compiled rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub action: RuleAction,
    pub source: String,
    condition: Condition,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Word(String),
    Symbol(&'static str),
}

fn tokenize(source: &str) -> Result<Vec<(Token, usize)>, RuleError> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte.is_ascii_whitespace() {
            index += 1;
        } else if byte.is_ascii_digit() || (byte == b'.' && bytes.get(index + 1).is_some_and(u8::is_ascii_digit)) {
            let start = index;
            while index < bytes.len() && (bytes[index].is_ascii_digit() || bytes[index] == b'.' || bytes[index] == b'_')
            {
                index += 1;
            }
            let text: String = source[start..index].chars().filter(|c| *c != '_').collect();
            let number = text.parse::<f64>().map_err(|_| RuleError {
                position: start,
                message: format!("{:?} is not a number", &source[start..index]),
            })?;
            tokens.push((Token::Number(number), start));
        } else if byte.is_ascii_alphabetic() || byte == b'_' {
            let start = index;
            while index < bytes.len() && (bytes[index].is_ascii_alphanumeric() || bytes[index] == b'_') {
                index += 1;
            }
            tokens.push((Token::Word(source[start..index].to_ascii_lowercase()), start));
        } else {
            let two = source.get(index..index + 2).unwrap_or("");
            let symbol = match two {
                "<=" => Some("<="),
                ">=" => Some(">="),
                "==" => Some("=="),
                "!=" => Some("!="),
                _ => None,
            };
            if let Some(symbol) = symbol {
                tokens.push((Token::Symbol(symbol), index));
                index += 2;
                continue;
            }
            let symbol = match byte {
                b'<' => "<",
                b'>' => ">",
                b'+' => "+",
                b'-' => "-",
                b'*' => "*",
                b'/' => "/",
                b'(' => "(",
                b')' => ")",
                _ => {
                    let character = source[index..].chars().next().unwrap_or('?');
                    return Err(RuleError { position: index, message: format!("unexpected character {character:?}") });
                }
            };
            tokens.push((Token::Symbol(symbol), index));
            index += 1;
        }
    }
    Ok(tokens)
}

struct Parser<'a> {
    tokens: Vec<(Token, usize)>,
    cursor: usize,
    end: usize,
    variables: &'a [&'a str],
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.cursor).map(|(token, _)| token)
    }

    fn position(&self) -> usize {
        self.tokens.get(self.cursor).map_or(self.end, |(_, position)| *position)
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, RuleError> {
        Err(RuleError { position: self.position(), message: message.into() })
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if w == word) {
            self.cursor += 1;
            true
        } else {
            false
        }
    }

    fn eat_symbol(&mut self, symbol: &str) -> bool {
        if matches!(self.peek(), Some(Token::Symbol(s)) if *s == symbol) {
            self.cursor += 1;
            true
        } else {
            false
        }
    }

    fn nest(&mut self) -> Result<(), RuleError> {
        self.depth += 1;
        if self.depth > NESTING_MAX { self.error(format!("nesting deeper than {NESTING_MAX}")) } else { Ok(()) }
    }

    fn or(&mut self) -> Result<Condition, RuleError> {
        let mut left = self.and()?;
        while self.eat_word("or") {
            left = Condition::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Condition, RuleError> {
        let mut left = self.not()?;
        while self.eat_word("and") {
            left = Condition::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Condition, RuleError> {
        if self.eat_word("not") {
            self.nest()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Condition::Not(Box::new(inner)));
        }
        self.compare()
    }

    fn compare(&mut self) -> Result<Condition, RuleError> {
        // A parenthesis may open a condition or an arithmetic group: try the condition first.
        if matches!(self.peek(), Some(Token::Symbol("("))) {
            let saved = self.cursor;
            self.cursor += 1;
            self.nest()?;
            if let Ok(inner) = self.or() {
                if !matches!(self.peek(), Some(Token::Symbol(")"))) {
                    return self.error("\")\" is expected");
                }
                self.cursor += 1;
                if !self.at_compare_or_arithmetic() {
                    self.depth -= 1;
                    return Ok(inner);
                }
            }
            self.depth -= 1;
            self.cursor = saved;
        }
        let left = self.sum()?;
        let operator = match self.peek() {
            Some(Token::Symbol("<")) => CompareOp::Less,
            Some(Token::Symbol("<=")) => CompareOp::LessEqual,
            Some(Token::Symbol(">")) => CompareOp::Greater,
            Some(Token::Symbol(">=")) => CompareOp::GreaterEqual,
            Some(Token::Symbol("==")) => CompareOp::Equal,
            Some(Token::Symbol("!=")) => CompareOp::NotEqual,
            _ => return self.error("a comparison (<, <=, >, >=, ==, !=) is expected"),
        };
        self.cursor += 1;
        let right = self.sum()?;
        Ok(Condition::Compare(left, operator, right))
    }

    fn at_compare_or_arithmetic(&self) -> bool {
        matches!(self.peek(), Some(Token::Symbol("<" | "<=" | ">" | ">=" | "==" | "!=" | "+" | "-" | "*" | "/")))
    }

    fn sum(&mut self) -> Result<Value, RuleError> {
        let mut left = self.product()?;
        loop {
            let operator = if self.eat_symbol("+") {
                ArithmeticOp::Add
            } else if self.eat_symbol("-") {
                ArithmeticOp::Subtract
            } else {
                return Ok(left);
            };
            left = Value::Arithmetic(Box::new(left), operator, Box::new(self.product()?));
        }
    }

    fn product(&mut self) -> Result<Value, RuleError> {
        let mut left = self.unary()?;
        loop {
            let operator = if self.eat_symbol("*") {
                ArithmeticOp::Multiply
            } else if self.eat_symbol("/") {
                ArithmeticOp::Divide
            } else {
                return Ok(left);
            };
            left = Value::Arithmetic(Box::new(left), operator, Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Value, RuleError> {
        if self.eat_symbol("-") {
            self.nest()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Value::Negate(Box::new(inner)));
        }
        if self.eat_symbol("(") {
            self.nest()?;
            let inner = self.sum()?;
            if !self.eat_symbol(")") {
                return self.error("\")\" is expected");
            }
            self.depth -= 1;
            return Ok(inner);
        }
        match self.peek().cloned() {
            Some(Token::Number(number)) => {
                self.cursor += 1;
                Ok(Value::Number(number))
            }
            Some(Token::Word(word)) => match self.variables.iter().position(|name| *name == word) {
                Some(index) => {
                    self.cursor += 1;
                    Ok(Value::Variable(index))
                }
                None => self.error(format!("unknown name {word:?}; known names: {}", self.variables.join(", "))),
            },
            Some(other) => self.error(format!("a number or a name is expected, not {other:?}")),
            None => self.error("the rule ends too early"),
        }
    }
}

impl Rule {
    /// Compiles `source` against the variable names (features, then `score`).
    pub fn compile(source: &str, variables: &[&str]) -> Result<Rule, RuleError> {
        if source.len() > RULE_SOURCE_LENGTH_MAX {
            return Err(RuleError {
                position: RULE_SOURCE_LENGTH_MAX,
                message: format!("a rule has at most {RULE_SOURCE_LENGTH_MAX} characters"),
            });
        }
        let tokens = tokenize(source)?;
        let mut parser = Parser { tokens, cursor: 0, end: source.len(), variables, depth: 0 };
        let action = match parser.peek() {
            Some(Token::Word(word)) if word == "allow" => RuleAction::Allow,
            Some(Token::Word(word)) if word == "review" => RuleAction::Review,
            Some(Token::Word(word)) if word == "decline" || word == "block" => RuleAction::Decline,
            _ => return parser.error("a rule starts with allow, review, decline or block"),
        };
        parser.cursor += 1;
        if !parser.eat_word("if") {
            return parser.error("\"if\" is expected after the action");
        }
        let condition = parser.or()?;
        if parser.cursor < parser.tokens.len() {
            return parser.error("unexpected text after the condition");
        }
        Ok(Rule { action, source: source.trim().to_owned(), condition })
    }

    /// True when the rule matches `variables` (same order as at compilation).
    pub fn matches(&self, variables: &[f64]) -> bool {
        evaluate(&self.condition, variables)
    }
}

fn value(value: &Value, variables: &[f64]) -> f64 {
    match value {
        Value::Number(number) => *number,
        Value::Variable(index) => variables.get(*index).copied().unwrap_or(f64::NAN),
        Value::Negate(inner) => -self::value(inner, variables),
        Value::Arithmetic(left, operator, right) => {
            let (left, right) = (self::value(left, variables), self::value(right, variables));
            match operator {
                ArithmeticOp::Add => left + right,
                ArithmeticOp::Subtract => left - right,
                ArithmeticOp::Multiply => left * right,
                // Division by zero gives ±inf or NaN; every comparison with NaN is false.
                ArithmeticOp::Divide => left / right,
            }
        }
    }
}

fn evaluate(condition: &Condition, variables: &[f64]) -> bool {
    match condition {
        Condition::Compare(left, operator, right) => {
            let (left, right) = (value(left, variables), value(right, variables));
            match operator {
                CompareOp::Less => left < right,
                CompareOp::LessEqual => left <= right,
                CompareOp::Greater => left > right,
                CompareOp::GreaterEqual => left >= right,
                CompareOp::Equal => left == right,
                CompareOp::NotEqual => left != right,
            }
        }
        Condition::And(left, right) => evaluate(left, variables) && evaluate(right, variables),
        Condition::Or(left, right) => evaluate(left, variables) || evaluate(right, variables),
        Condition::Not(inner) => !evaluate(inner, variables),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &["amount_centavos", "patient_age_days", "device_patients_24h", "score"];

    fn rule(source: &str) -> Rule {
        Rule::compile(source, NAMES).unwrap()
    }

    #[test]
    fn the_issue_examples() {
        let review = rule("review if amount_centavos > 500000 and patient_age_days < 1");
        assert_eq!(review.action, RuleAction::Review);
        assert!(review.matches(&[500_001.0, 0.0, 1.0, 0.0]));
        assert!(!review.matches(&[500_000.0, 0.0, 1.0, 0.0]));
        assert!(!review.matches(&[600_000.0, 3.0, 1.0, 0.0]));
        let decline = rule("decline if device_patients_24h >= 3");
        assert_eq!(decline.action, RuleAction::Decline);
        assert!(decline.matches(&[0.0, 0.0, 3.0, 0.0]));
        assert_eq!(rule("block if score > 900").action, RuleAction::Decline);
    }

    #[test]
    fn precedence_parentheses_arithmetic_not() {
        let r = rule("review if not (score < 500 or amount_centavos <= 100) and amount_centavos / 100 + 1 >= 3 * 2");
        assert!(r.matches(&[500.0, 0.0, 0.0, 700.0]));
        assert!(!r.matches(&[400.0, 0.0, 0.0, 700.0]), "400/100+1 = 5 < 6");
        assert!(!r.matches(&[50_000.0, 0.0, 0.0, 100.0]));
        let arithmetic_group = rule("review if (amount_centavos + 1) * 2 > 10");
        assert!(arithmetic_group.matches(&[5.0, 0.0, 0.0, 0.0]));
        assert!(!arithmetic_group.matches(&[4.0, 0.0, 0.0, 0.0]));
        let or_binds_loosest = rule("allow if score < 1 or score > 999 and amount_centavos == 0");
        assert!(or_binds_loosest.matches(&[7.0, 0.0, 0.0, 0.0]));
        assert!(rule("review if -score < -10 and 1_000 == 1000").matches(&[0.0, 0.0, 0.0, 11.0]));
    }

    #[test]
    fn errors_say_where() {
        let error = |source: &str| Rule::compile(source, NAMES).unwrap_err();
        assert_eq!(error("reveiw if score > 1").position, 0);
        assert_eq!(error("review when score > 1").position, 7);
        let unknown = error("review if amount > 1");
        assert_eq!(unknown.position, 10);
        assert!(unknown.message.contains("unknown name \"amount\""));
        assert_eq!(error("review if score > ").position, 18);
        assert_eq!(error("review if score").position, 15, "a bare value is not a condition");
        assert_eq!(error("review if score > 1 )").position, 20);
        assert_eq!(error("review if score > 1 # x").position, 20);
        assert_eq!(error("review if (score > 1").position, 20);
        assert!(Rule::compile(&format!("review if {}score > 1", "not ".repeat(40)), NAMES).is_err());
        assert!(Rule::compile(&"x".repeat(RULE_SOURCE_LENGTH_MAX + 1), NAMES).is_err());
    }

    #[test]
    fn nan_never_matches() {
        let r = rule("review if amount_centavos / patient_age_days > 1");
        assert!(!r.matches(&[0.0, 0.0, 0.0, 0.0]), "0/0 is NaN");
    }
}
