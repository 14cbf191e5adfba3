//! Reads a history back from its `{:#?}` dump (a `Vec<Operation>`), the
//! form in which the cluster simulations print a history that failed, so
//! such a history can be kept as a test case exactly as it was recorded.

use lincheck::{Op, Operation, Outcome};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Text(String),
    Number(u64),
    Punct(char),
}

fn tokenize(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut text = String::new();
            loop {
                match chars.next().expect("unterminated string in dump") {
                    '"' => break,
                    '\\' => text.push(chars.next().expect("escape at end of dump")),
                    other => text.push(other),
                }
            }
            tokens.push(Token::Text(text));
        } else if c.is_ascii_digit() {
            let mut n: u64 = 0;
            while let Some(digit) = chars.peek().and_then(|d| d.to_digit(10)) {
                n = n * 10 + u64::from(digit);
                chars.next();
            }
            tokens.push(Token::Number(n));
        } else if c.is_alphabetic() || c == '_' {
            let mut word = String::new();
            while let Some(&w) = chars.peek().filter(|w| w.is_alphanumeric() || **w == '_') {
                word.push(w);
                chars.next();
            }
            tokens.push(Token::Word(word));
        } else {
            tokens.push(Token::Punct(c));
            chars.next();
        }
    }
    tokens
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn next(&mut self) -> Token {
        let token = self.tokens.get(self.at).cloned().expect("dump ends early");
        self.at += 1;
        token
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn punct(&mut self, expected: char) {
        let token = self.next();
        assert_eq!(token, Token::Punct(expected), "at token {}", self.at);
    }

    /// Consumes a `,` if one follows (the pretty form ends every field
    /// and element with one).
    fn comma(&mut self) {
        if self.peek() == Some(&Token::Punct(',')) {
            self.at += 1;
        }
    }

    fn word(&mut self) -> String {
        match self.next() {
            Token::Word(word) => word,
            other => panic!("expected a name at token {}, got {other:?}", self.at),
        }
    }

    fn field(&mut self, name: &str) {
        assert_eq!(self.word(), name, "at token {}", self.at);
        self.punct(':');
    }

    fn text(&mut self) -> String {
        match self.next() {
            Token::Text(text) => text,
            other => panic!("expected a string at token {}, got {other:?}", self.at),
        }
    }

    fn number(&mut self) -> u64 {
        match self.next() {
            Token::Number(n) => n,
            other => panic!("expected a number at token {}, got {other:?}", self.at),
        }
    }

    /// `Some(<inner>)` or `None`.
    fn option<T>(&mut self, inner: impl FnOnce(&mut Self) -> T) -> Option<T> {
        match self.word().as_str() {
            "None" => None,
            "Some" => {
                self.punct('(');
                let value = inner(self);
                self.comma();
                self.punct(')');
                Some(value)
            }
            other => panic!("expected Some or None, got {other}"),
        }
    }

    /// `{ value: "..." }` after a variant name.
    fn value_struct(&mut self) -> String {
        self.punct('{');
        self.field("value");
        let value = self.text();
        self.comma();
        self.punct('}');
        value
    }

    fn op(&mut self) -> Op {
        match self.word().as_str() {
            "Get" => Op::Get,
            "Delete" => Op::Delete,
            "Put" => Op::Put {
                value: self.value_struct(),
            },
            "CompareAndSet" => {
                self.punct('{');
                self.field("expected");
                let expected = self.option(Self::text);
                self.comma();
                self.field("value");
                let value = self.text();
                self.comma();
                self.punct('}');
                Op::CompareAndSet { expected, value }
            }
            other => panic!("unknown operation {other}"),
        }
    }

    fn outcome(&mut self) -> Outcome {
        match self.word().as_str() {
            "Ok" => Outcome::Ok,
            "NotFound" => Outcome::NotFound,
            "Deleted" => Outcome::Deleted,
            "Conflict" => Outcome::Conflict,
            "Unknown" => Outcome::Unknown,
            "Found" => Outcome::Found {
                value: self.value_struct(),
            },
            other => panic!("unknown outcome {other}"),
        }
    }

    fn operation(&mut self) -> Operation {
        assert_eq!(self.word(), "Operation");
        self.punct('{');
        self.field("client");
        let client = self.number();
        self.comma();
        self.field("key");
        let key = self.text();
        self.comma();
        self.field("op");
        let op = self.op();
        self.comma();
        self.field("outcome");
        let outcome = self.outcome();
        self.comma();
        self.field("call");
        let call = self.number();
        self.comma();
        self.field("ret");
        let ret = self.option(Self::number);
        self.comma();
        self.punct('}');
        Operation {
            client,
            key,
            op,
            outcome,
            call,
            ret,
        }
    }
}

/// Parses `format!("{:#?}", operations)` (or the compact `{:?}` form)
/// back into the operations.
pub fn parse_operations(dump: &str) -> Vec<Operation> {
    let mut parser = Parser {
        tokens: tokenize(dump),
        at: 0,
    };
    parser.punct('[');
    let mut operations = Vec::new();
    while parser.peek() != Some(&Token::Punct(']')) {
        operations.push(parser.operation());
        parser.comma();
    }
    parser.punct(']');
    assert_eq!(parser.peek(), None, "trailing input after the history");
    operations
}
