//! A YAML tree that remembers where every node came from.
//!
//! serde's derive stops at the first error and forgets positions, but `ferry validate`
//! must report every error with its line and column. So documents are first read into
//! this small positioned tree, and the decoders walk it collecting diagnostics.

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Deeper nesting than this is refused: no resource needs it, and it bounds the
/// work (and recursion in the decoders) that a hostile file can cause.
pub const MAX_DEPTH: usize = 64;

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// Line, counted from 1.
    pub line: usize,
    /// Column, counted from 1.
    pub column: usize,
}

impl Pos {
    fn from_marker(mark: Marker) -> Pos {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Pos {
            line: mark.line().max(1),
            column: mark.col() + 1,
        }
    }
}

/// One YAML node with the position where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts.
    pub pos: Pos,
    /// What the node holds.
    pub value: Value,
}

/// The shapes a YAML node can take.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing at all.
    Null,
    /// A scalar; `quoted` tells `"2"` (a string) from `2` (a number).
    Scalar { text: String, quoted: bool },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order; keys are scalars.
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// A name for the shape, for messages such as "expected a mapping, found a sequence".
    pub fn shape(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a sequence",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Why a source could not be read as YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// The parser's explanation.
    pub message: String,
}

/// Reads every document of a YAML stream. Empty documents (e.g. a trailing `---`)
/// are dropped. Anchors are allowed; aliases are refused, because resource files do not
/// need them and expanding them is the classic way to make a small file huge.
pub fn parse_documents(source: &str) -> Result<Vec<Node>, SyntaxError> {
    // A byte order mark may open the stream (Windows editors write one); it is not content.
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    // yaml-rust2 takes NUL for the end of input and would drop the rest silently; YAML
    // does not allow it in a stream anyway.
    if let Some(index) = source.find('\0') {
        return Err(SyntaxError {
            pos: position_of(source, index),
            message: "NUL character is not allowed in YAML".into(),
        });
    }
    let mut parser = Parser::new_from_str(source);
    let mut documents = Vec::new();
    // Open collections: the node being built and, for mappings, a pending key.
    let mut stack: Vec<(Node, Option<Node>)> = Vec::new();
    let mut finished: Option<Node> = None;
    loop {
        let (event, mark) = parser.next_token().map_err(|error| SyntaxError {
            pos: Pos::from_marker(*error.marker()),
            message: error.info().to_owned(),
        })?;
        let pos = Pos::from_marker(mark);
        let node = match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentStart => continue,
            Event::DocumentEnd => {
                if let Some(root) = finished.take()
                    && root.value != Value::Null
                {
                    documents.push(root);
                }
                continue;
            }
            Event::Alias(_) => {
                return Err(SyntaxError {
                    pos,
                    message: "YAML aliases are not supported in resource files".into(),
                });
            }
            Event::Scalar(text, style, _anchor, _tag) => {
                let quoted = style != TScalarStyle::Plain;
                let is_null =
                    !quoted && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL");
                Node {
                    pos,
                    value: if is_null {
                        Value::Null
                    } else {
                        Value::Scalar { text, quoted }
                    },
                }
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(SyntaxError {
                        pos,
                        message: format!("nesting deeper than {MAX_DEPTH} levels"),
                    });
                }
                let value = if matches!(event, Event::SequenceStart(..)) {
                    Value::Seq(Vec::new())
                } else {
                    Value::Map(Vec::new())
                };
                stack.push((Node { pos, value }, None));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some((node, _)) => node,
                None => {
                    return Err(SyntaxError {
                        pos,
                        message: "unbalanced collection end".into(),
                    });
                }
            },
        };
        // Attach the completed node to its parent, or finish the document.
        match stack.last_mut() {
            None => finished = Some(node),
            Some((parent, pending_key)) => match &mut parent.value {
                Value::Seq(items) => {
                    // yaml-rust2 marks a block collection where its first entry ends;
                    // the first entry's own position is what a reader expects.
                    if items.is_empty() {
                        parent.pos = parent.pos.min(node.pos);
                    }
                    items.push(node)
                }
                Value::Map(entries) => match pending_key.take() {
                    None => {
                        if entries.is_empty() {
                            parent.pos = parent.pos.min(node.pos);
                        }
                        *pending_key = Some(node)
                    }
                    Some(key) => entries.push((key, node)),
                },
                Value::Null | Value::Scalar { .. } => {
                    return Err(SyntaxError {
                        pos,
                        message: "scalar cannot hold children".into(),
                    });
                }
            },
        }
    }
    if let Some(root) = finished.take()
        && root.value != Value::Null
    {
        documents.push(root);
    }
    Ok(documents)
}

/// The line and column of byte `index`, counting line breaks as YAML does (`\n`, `\r\n`
/// or a lone `\r`).
fn position_of(source: &str, index: usize) -> Pos {
    let mut pos = Pos { line: 1, column: 1 };
    let mut chars = source[..index].chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\n' || (c == '\r' && chars.peek() != Some(&'\n')) {
            pos = Pos {
                line: pos.line + 1,
                column: 1,
            };
        } else if c != '\r' {
            pos.column += 1;
        }
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let docs = parse_documents("a: 1\nb:\n  - x\n").expect("valid yaml");
        let Value::Map(entries) = &docs[0].value else {
            panic!("expected a map")
        };
        assert_eq!(entries[0].0.pos, Pos { line: 1, column: 1 });
        assert_eq!(entries[1].1.pos.line, 3);
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("expected a seq")
        };
        assert_eq!(items[0].pos, Pos { line: 3, column: 5 });
    }

    #[test]
    fn several_documents_and_empty_ones() {
        let docs = parse_documents("---\na: 1\n---\n---\nb: 2\n---\n").expect("valid yaml");
        assert_eq!(docs.len(), 2);
    }

    #[test]
    fn quoted_scalars_are_marked() {
        let docs = parse_documents("a: \"2\"\nb: 2\nc: ~\n").expect("valid yaml");
        let Value::Map(entries) = &docs[0].value else {
            panic!("expected a map")
        };
        assert_eq!(
            entries[0].1.value,
            Value::Scalar {
                text: "2".into(),
                quoted: true
            }
        );
        assert_eq!(
            entries[1].1.value,
            Value::Scalar {
                text: "2".into(),
                quoted: false
            }
        );
        assert_eq!(entries[2].1.value, Value::Null);
    }

    #[test]
    fn aliases_and_deep_nesting_are_refused() {
        let error = parse_documents("a: &x 1\nb: *x\n").expect_err("alias");
        assert_eq!(error.pos.line, 2);
        let deep = "[".repeat(MAX_DEPTH + 1);
        let error = parse_documents(&deep).expect_err("too deep");
        assert!(error.message.contains("nesting"), "{}", error.message);
    }
}
