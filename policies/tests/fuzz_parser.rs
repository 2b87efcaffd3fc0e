//! Fuzzing the resource-file parser: no input, however malformed or large, may make it
//! panic, hang or report nonsense.
//!
//! Resource files are written by people and, through the REST API and `ferry validate`,
//! by anyone who can reach us, so `parse_source` is an attack surface as much as a
//! convenience. The unit tests in `src/resources/tests.rs` pin exact diagnostics for
//! chosen inputs; this file throws everything else at the parser and checks the
//! properties that must hold for *every* input:
//!
//! * it returns (no panic, no stack overflow, no runaway work on large inputs);
//! * every diagnostic names the file, has a 1-based line and column that point into the
//!   input (at a character, at the end of a line, or at the start of the line after the
//!   last), and has a non-empty message; diagnostics come sorted;
//! * a YAML syntax error yields exactly one diagnostic and no resources;
//! * otherwise every diagnostic falls inside one document, and a document yields a
//!   resource exactly when it produced no diagnostic (nothing is dropped silently, nothing
//!   with an error gets through), with the kind and name that the document says;
//! * the positioned YAML tree has positions inside the input, in source order, and a
//!   generated document reads back as exactly the tree it was rendered from;
//! * parsing is deterministic, and `ResourceSet::add_source` and `check_references`
//!   agree with `parse_source`.
//!
//! The inputs come from:
//! (a) arbitrary bytes, and arbitrary strings over YAML's punctuation;
//! (b) mutations of every file in `testdata/fuzz-corpus/` (byte flips, inserted YAML
//!     punctuation, anchors, aliases, tags, quotes, deleted ranges, duplicated or swapped
//!     lines, indentation changes, truncation);
//! (c) documents generated from a small grammar, both free-form YAML trees (which must
//!     also read back as exactly the tree that was rendered) and resources that follow
//!     the schema of `spec/resources.md` with values from lists of good and bad ones;
//! (d) the quantity, duration and window parsers on arbitrary and on generated strings,
//!     against simple models;
//! (e) every corpus file, and a few very large inputs, deterministically.
//!
//! Corpus files named `valid-*.yaml` must parse without a single diagnostic. When a
//! crash is found and fixed, its input goes into the corpus; proptest also keeps the
//! seeds of failing cases in `fuzz_parser.proptest-regressions` next to this file.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

use ferry_policies::quantity::{Cpu, Memory, parse_cpu, parse_duration, parse_memory};
use ferry_policies::resources::yaml::{self, MAX_DEPTH, Node, Pos, Value};
use ferry_policies::resources::{
    Diagnostic, Located, Resource, ResourceSet, check_references, parse_source,
};
use ferry_policies::window::Window;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::FileFailurePersistence;

const FILE: &str = "fuzz.yaml";

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // The file next to this one; the default would look for a `lib.rs` first and warn.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// The properties.

/// The width of each line of an input, in characters, with lines as YAML counts them:
/// `\n`, `\r\n` and a lone `\r` each end one.
struct Lines(Vec<usize>);

impl Lines {
    fn of(text: &str) -> Lines {
        let mut widths = vec![0];
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\r' if chars.peek() == Some(&'\n') => {}
                '\r' | '\n' => widths.push(0),
                _ => *widths.last_mut().expect("never empty") += 1,
            }
        }
        Lines(widths)
    }

    /// Whether `pos` is a place in the input: a character, the end of a line, or the
    /// start of the line after the last.
    fn contains(&self, pos: Pos) -> bool {
        let width = match pos.line.checked_sub(1) {
            Some(line) if line < self.0.len() => self.0[line],
            Some(line) if line == self.0.len() => 0,
            _ => return false,
        };
        (1..=width + 1).contains(&pos.column)
    }
}

fn check_diagnostic(diagnostic: &Diagnostic, lines: &Lines) {
    assert_eq!(diagnostic.file, FILE, "{diagnostic:?}");
    assert!(
        lines.contains(diagnostic.pos),
        "diagnostic outside the input: {diagnostic:?}"
    );
    assert!(
        !diagnostic.message.trim().is_empty(),
        "empty message: {diagnostic:?}"
    );
}

/// Positions in the tree are places in the input, in source order: no node starts
/// before its parent or before its previous sibling, no value before its key.
fn check_tree(node: &Node, floor: Pos, lines: &Lines) {
    let pos = node.pos;
    assert!(lines.contains(pos), "node outside the input: {node:?}");
    assert!(pos >= floor, "node at {pos:?} starts before {floor:?}");
    let mut previous = pos;
    match &node.value {
        Value::Null | Value::Scalar { .. } => {}
        Value::Seq(items) => {
            for item in items {
                check_tree(item, previous, lines);
                previous = item.pos;
            }
        }
        Value::Map(entries) => {
            for (key, value) in entries {
                check_tree(key, previous, lines);
                check_tree(value, key.pos, lines);
                previous = key.pos;
            }
        }
    }
}

fn field<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    let Value::Map(entries) = &node.value else {
        return None;
    };
    entries
        .iter()
        .find(|(k, _)| matches!(&k.value, Value::Scalar { text, .. } if text == key))
        .map(|(_, v)| v)
}

fn text_of(node: Option<&Node>) -> Option<&str> {
    match &node?.value {
        Value::Scalar { text, .. } => Some(text),
        _ => None,
    }
}

/// A resource is what its document says it is.
fn check_resource_matches(document: &Node, resource: &Resource) {
    let (kind, name) = match resource {
        Resource::Cluster(c) => ("Cluster", &c.name),
        Resource::Workload(w) => ("Workload", &w.name),
        Resource::Policy(p) => ("PlacementPolicy", &p.name),
    };
    assert_eq!(text_of(field(document, "kind")), Some(kind), "{resource:?}");
    let metadata = field(document, "metadata");
    assert_eq!(
        text_of(metadata.and_then(|m| field(m, "name"))),
        Some(name.as_str()),
        "{resource:?}"
    );
    if let Resource::Workload(w) = resource {
        let namespace = text_of(metadata.and_then(|m| field(m, "namespace"))).unwrap_or("default");
        assert_eq!(namespace, w.namespace);
    }
}

/// Parses `text` and checks every property; returns the resources and diagnostics.
fn check_source(text: &str) -> (Vec<Located<Resource>>, Vec<Diagnostic>) {
    let (resources, diagnostics) = parse_source(FILE, text);
    let again = parse_source(FILE, text);
    assert!(
        again.0 == resources && again.1 == diagnostics,
        "parsing is not deterministic"
    );

    let lines = Lines::of(text);
    for diagnostic in &diagnostics {
        check_diagnostic(diagnostic, &lines);
    }
    assert!(
        diagnostics.is_sorted(),
        "diagnostics are not sorted: {diagnostics:#?}"
    );
    for resource in &resources {
        assert_eq!(resource.file, FILE);
    }

    match yaml::parse_documents(text) {
        Err(error) => {
            assert!(
                resources.is_empty(),
                "resources from invalid YAML: {resources:?}"
            );
            assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
            assert_eq!(diagnostics[0].pos, error.pos);
            assert!(
                diagnostics[0].message.contains(&error.message),
                "{diagnostics:?} / {error:?}"
            );
        }
        Ok(documents) => {
            let starts: Vec<Pos> = documents.iter().map(|d| d.pos).collect();
            let mut floor = Pos { line: 1, column: 1 };
            for document in &documents {
                check_tree(document, floor, &lines);
                floor = document.pos;
            }
            assert!(
                starts.windows(2).all(|w| w[0] < w[1]),
                "documents not in order: {starts:?}"
            );
            // Each diagnostic belongs to the last document that starts at or before it.
            let mut flagged = BTreeSet::new();
            for diagnostic in &diagnostics {
                let after = starts.partition_point(|start| *start <= diagnostic.pos);
                assert!(
                    after > 0,
                    "diagnostic before the first document: {diagnostic:?} {starts:?}"
                );
                flagged.insert(after - 1);
            }
            let clean: Vec<usize> = (0..documents.len())
                .filter(|i| !flagged.contains(i))
                .collect();
            let located: Vec<Pos> = resources.iter().map(|r| r.pos).collect();
            let expected: Vec<Pos> = clean.iter().map(|&i| starts[i]).collect();
            assert_eq!(
                located, expected,
                "a document yields a resource exactly when it has no diagnostic\n{diagnostics:#?}"
            );
            for (resource, &i) in resources.iter().zip(&clean) {
                check_resource_matches(&documents[i], &resource.value);
            }
        }
    }

    let mut set = ResourceSet::default();
    assert_eq!(set.add_source(FILE, text), diagnostics);
    assert_eq!(
        set.clusters.len() + set.workloads.len() + set.policies.len(),
        resources.len()
    );
    for diagnostic in check_references(&set) {
        check_diagnostic(&diagnostic, &lines);
    }
    (resources, diagnostics)
}

// ---------------------------------------------------------------------------------------
// The corpus.

fn corpus() -> &'static [(String, Vec<u8>)] {
    static CORPUS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fuzz-corpus");
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .expect("testdata/fuzz-corpus exists")
            .map(|entry| {
                let path = entry.expect("readable directory").path();
                let name = path
                    .file_name()
                    .expect("a file name")
                    .to_string_lossy()
                    .into_owned();
                (name, std::fs::read(&path).expect("readable corpus file"))
            })
            .collect();
        files.sort();
        assert!(
            files.len() >= 20,
            "the corpus went missing: {} files",
            files.len()
        );
        files
    })
}

// ---------------------------------------------------------------------------------------
// (a) Arbitrary bytes.

/// Fragments that YAML gives a meaning to.
#[rustfmt::skip]
const PUNCTUATION: &[&str] = &[
    ":", ": ", "-", "- ", "[", "]", "{", "}", ",", "?", "? ", "&a ", "*a", "&a", "!!tag ",
    "!!str ", "!!binary ", "!local ", "'", "\"", "#", " #", "|", "|-", ">", ">+", "%YAML 1.2",
    "%TAG ! x:", "---", "...", "\n", "\r\n", "\r", "\t", " ", "  ", "\u{feff}", "\0", "\\", "~",
    "null", "@", "`", "<<", "\u{2028}", "\u{85}", "é", "🚀", "1e999", "-1", "0x1F", ".nan",
    "kind", "apiVersion: ferry.dev/v1alpha1", "kind: Cluster", "metadata", "spec", "name", "a",
];

fn arbitrary_text() -> impl Strategy<Value = String> {
    prop_oneof![
        vec(any::<u8>(), 0..1024).prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        vec(
            prop_oneof![
                select(PUNCTUATION).prop_map(str::to_owned),
                "[a-z0-9 ]{1,4}"
            ],
            0..80
        )
        .prop_map(|parts| parts.concat()),
        any::<String>(),
    ]
}

// ---------------------------------------------------------------------------------------
// (b) Mutations.

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Insert(Index, &'static str),
    DeleteRange(Index, usize),
    DuplicateLine(Index),
    DeleteLine(Index),
    SwapLines(Index, Index),
    /// Adds (positive) or removes (negative) leading spaces of a line.
    Indent(Index, i8),
    TabIndent(Index),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (any::<Index>(), 0u8..8).prop_map(|(i, bit)| Mutation::FlipBit(i, bit)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        4 => (any::<Index>(), select(PUNCTUATION)).prop_map(|(i, s)| Mutation::Insert(i, s)),
        1 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| Mutation::DeleteRange(i, n)),
        1 => any::<Index>().prop_map(Mutation::DuplicateLine),
        1 => any::<Index>().prop_map(Mutation::DeleteLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        2 => (any::<Index>(), -4i8..=4).prop_map(|(i, d)| Mutation::Indent(i, d)),
        1 => any::<Index>().prop_map(Mutation::TabIndent),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn split_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    // Index of a byte, or of the position after the last one.
    let at = |i: &Index, len: usize| i.index(len + 1);
    match mutation {
        Mutation::FlipBit(i, bit) if !bytes.is_empty() => {
            let i = i.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        Mutation::SetByte(i, b) if !bytes.is_empty() => {
            let i = i.index(bytes.len());
            bytes[i] = *b;
        }
        Mutation::Insert(i, text) => {
            let i = at(i, bytes.len());
            bytes.splice(i..i, text.bytes());
        }
        Mutation::DeleteRange(i, n) => {
            let i = at(i, bytes.len());
            bytes.drain(i..(i + n).min(bytes.len()));
        }
        Mutation::Truncate(i) => {
            let i = at(i, bytes.len());
            bytes.truncate(i);
        }
        Mutation::DuplicateLine(i)
        | Mutation::DeleteLine(i)
        | Mutation::SwapLines(i, _)
        | Mutation::Indent(i, _)
        | Mutation::TabIndent(i) => {
            let mut lines = split_lines(bytes);
            if lines.is_empty() {
                return;
            }
            let n = i.index(lines.len());
            match mutation {
                Mutation::DuplicateLine(_) => {
                    let line = lines[n].clone();
                    lines.insert(n, line);
                }
                Mutation::DeleteLine(_) => {
                    lines.remove(n);
                }
                Mutation::SwapLines(_, other) => {
                    let m = other.index(lines.len());
                    lines.swap(n, m);
                }
                Mutation::Indent(_, delta) => {
                    let line = &mut lines[n];
                    if *delta >= 0 {
                        line.splice(0..0, std::iter::repeat_n(b' ', delta.unsigned_abs().into()));
                    } else {
                        let spaces = line.iter().take_while(|&&b| b == b' ').count();
                        line.drain(0..spaces.min(delta.unsigned_abs().into()));
                    }
                }
                Mutation::TabIndent(_) => lines[n].insert(0, b'\t'),
                _ => unreachable!("a line mutation"),
            }
            *bytes = lines.concat();
        }
        Mutation::FlipBit(..) | Mutation::SetByte(..) => {}
    }
}

fn mutate(source: &[u8], mutations: &[Mutation]) -> String {
    let mut bytes = source.to_vec();
    for mutation in mutations {
        apply(&mut bytes, mutation);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

// ---------------------------------------------------------------------------------------
// (c) Generated documents.

/// A YAML tree without positions: what a document should read back as.
#[derive(Debug, Clone, PartialEq)]
enum Tree {
    Null,
    Scalar(String, bool),
    Seq(Vec<Tree>),
    Map(Vec<(Tree, Tree)>),
}

fn bare(node: &Node) -> Tree {
    match &node.value {
        Value::Null => Tree::Null,
        Value::Scalar { text, quoted } => Tree::Scalar(text.clone(), *quoted),
        Value::Seq(items) => Tree::Seq(items.iter().map(bare).collect()),
        Value::Map(entries) => Tree::Map(entries.iter().map(|(k, v)| (bare(k), bare(v))).collect()),
    }
}

const NULL_WORDS: &[&str] = &["~", "null", "Null", "NULL"];

/// Characters that YAML lets a plain or quoted scalar hold unescaped.
fn printable(c: char) -> bool {
    matches!(c, ' '..='~')
        || (c >= '\u{a0}'
            && !matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
            ))
}

/// Whether `text` can be written as a plain scalar in block and flow context alike.
fn plain_safe(text: &str) -> bool {
    let Some(first) = text.chars().next() else {
        return false;
    };
    let second = text.chars().nth(1);
    let safe_start = !"-?:,[]{}#&*!|>'\"%@`. ".contains(first)
        || (first == '-' && second.is_some_and(|c| c.is_ascii_alphanumeric()))
        || (first == '.' && second.is_some_and(|c| c.is_ascii_digit()));
    safe_start
        && !text.ends_with(' ')
        && !NULL_WORDS.contains(&text)
        && text.chars().all(|c| printable(c) && !",[]{}#:".contains(c))
}

fn scalar(text: &str, quoted: bool) -> Tree {
    Tree::Scalar(text.to_owned(), quoted || !plain_safe(text))
}

fn quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            c if printable(c) => out.push(c),
            c if u32::from(c) <= 0xffff => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

/// Renders trees as YAML, choosing block or flow style, null spellings and indentation
/// from a seed, so that one tree has many spellings.
struct Renderer(u64);

impl Renderer {
    fn roll(&mut self, one_in: u64) -> bool {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0
            .wrapping_mul(0x2545_f491_4f6c_dd1d)
            .is_multiple_of(one_in)
    }

    fn flow(&mut self, tree: &Tree) -> String {
        match tree {
            Tree::Null => (if self.roll(2) { "~" } else { "null" }).to_owned(),
            Tree::Scalar(text, false) => text.clone(),
            Tree::Scalar(text, true) => quote(text),
            Tree::Seq(items) => {
                let items: Vec<String> = items.iter().map(|i| self.flow(i)).collect();
                format!("[{}]", items.join(if self.roll(2) { ", " } else { "," }))
            }
            Tree::Map(entries) => {
                let entries: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| format!("{}: {}", self.flow(k), self.flow(v)))
                    .collect();
                format!("{{{}}}", entries.join(", "))
            }
        }
    }

    /// Writes `tree` as lines indented by `indent`, each ending in a newline, in block
    /// style or (now and then, and always for scalars) as one flow line.
    fn block(&mut self, tree: &Tree, indent: usize, out: &mut String) {
        let non_empty = match tree {
            Tree::Seq(items) => !items.is_empty(),
            Tree::Map(entries) => !entries.is_empty(),
            Tree::Null | Tree::Scalar(..) => false,
        };
        if non_empty && !self.roll(4) {
            self.collection(tree, indent, out);
        } else {
            out.push_str(&" ".repeat(indent));
            out.push_str(&self.flow(tree));
            out.push('\n');
        }
    }

    /// Writes a non-empty sequence or mapping in block style.
    fn collection(&mut self, tree: &Tree, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match tree {
            Tree::Seq(items) => {
                for item in items {
                    // The item's lines, with its first indentation replaced by the dash.
                    let mut child = String::new();
                    self.block(item, indent + 2, &mut child);
                    out.push_str(&pad);
                    out.push_str("- ");
                    out.push_str(&child[indent + 2..]);
                }
            }
            Tree::Map(entries) => {
                for (key, value) in entries {
                    out.push_str(&pad);
                    out.push_str(&self.flow(key));
                    out.push(':');
                    match value {
                        Tree::Null if self.roll(2) => out.push('\n'),
                        Tree::Seq(items) if !items.is_empty() && self.roll(2) => {
                            // A sequence may sit at its key's indentation.
                            out.push('\n');
                            let deeper = if self.roll(2) { indent } else { indent + 2 };
                            self.collection(value, deeper, out);
                        }
                        Tree::Map(entries) if !entries.is_empty() && self.roll(2) => {
                            out.push('\n');
                            self.collection(value, indent + 2, out);
                        }
                        _ => {
                            out.push(' ');
                            out.push_str(&self.flow(value));
                            out.push('\n');
                        }
                    }
                }
            }
            Tree::Null | Tree::Scalar(..) => unreachable!("only collections"),
        }
    }

    fn documents(&mut self, documents: &[Tree]) -> String {
        let mut out = String::new();
        if self.roll(3) {
            out.push_str("# generated\n");
        }
        for (i, document) in documents.iter().enumerate() {
            if i > 0 || self.roll(2) {
                out.push_str("---\n");
            }
            self.block(document, 0, &mut out);
            if self.roll(5) {
                out.push_str("...\n");
            }
        }
        out
    }
}

/// Scalars that mean something somewhere in a resource file.
#[rustfmt::skip]
const TOKENS: &[&str] = &[
    "ferry.dev/v1alpha1", "v1", "Cluster", "Workload", "PlacementPolicy", "Pod", "apiVersion",
    "kind", "metadata", "spec", "status", "name", "namespace", "labels", "openstack", "gke",
    "kubernetes", "sim", "pricing", "capacity", "reserved", "taints", "cpu", "memory", "500m",
    "1.5", "2", "4Gi", "1e9", "0", "-1", "1e400", ".inf", "NaN", "true", "false", "yes",
    "Ready", "NoSchedule", "In", "Exists", "1h", "Mon-Fri 22:00-06:00", "a b", "é", "🚀", "x: y",
    "#c", "- a", "[", "'", "\"", "\\", "\t", " lead", "trail ", "", "~", "null",
];

fn arbitrary_scalar() -> impl Strategy<Value = Tree> {
    prop_oneof![
        6 => (select(TOKENS), proptest::bool::weighted(0.2)).prop_map(|(t, q)| scalar(t, q)),
        2 => ("[a-zA-Z0-9._/-]{1,12}", any::<bool>()).prop_map(|(t, q)| scalar(&t, q)),
        1 => "\\PC{0,16}".prop_map(|t| scalar(&t, true)),
        1 => any::<String>().prop_map(|t| scalar(&t.chars().take(40).collect::<String>(), true)),
        1 => Just(Tree::Null),
    ]
}

fn arbitrary_key() -> impl Strategy<Value = Tree> {
    prop_oneof![
        8 => arbitrary_scalar().prop_map(|k| if k == Tree::Null { scalar("k", false) } else { k }),
        1 => Just(Tree::Null),
        1 => select(&["1", "true", "0.5", "-3"][..]).prop_map(|t| scalar(t, false)),
    ]
}

fn arbitrary_tree() -> impl Strategy<Value = Tree> {
    arbitrary_scalar().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Tree::Seq),
            vec((arbitrary_key(), inner), 0..6).prop_map(Tree::Map),
        ]
    })
}

/// The schema of resource files, as far as the generator needs it.
#[derive(Clone)]
enum Schema {
    /// Fields, each with the percentage of documents that include it.
    Map(Vec<(&'static str, u8, Schema)>),
    List(Box<Schema>),
    /// One of several shapes, such as a cluster spec per provider.
    OneOf(Vec<Schema>),
    /// Good values, and bad ones (used now and then).
    Leaf(Values),
}

type Values = (&'static [&'static str], &'static [&'static str]);

const NAMES: Values = (
    &["openstack-dc1", "sim-a", "a", "web-1", "0"],
    &["Checkout", "-bad", "a_b", "x.y", ""],
);
const STRINGS: Values = (
    &["shop", "web", "eu", "maintenance", "gpu", "dc1", "true"],
    &["x y", "/etc/k", "", "é"],
);
const INTEGERS: Values = (
    &["1", "2", "3", "50"],
    &[
        "0",
        "-1",
        "101",
        "1001",
        "100001",
        "9223372036854775808",
        "1.5",
        "two",
    ],
);
const NUMBERS: Values = (
    &["0", "1", "0.031", "1e-2", "100", "12.5"],
    &["-1", "1e400", ".inf", "NaN", "abc", "1_0", "100.5"],
);
const CPUS: Values = (
    &["500m", "2", "1.5", "64", ".5"],
    &["0.0001", "1.5m", "abc", "18446744073709551615", ""],
);
const MEMORIES: Values = (
    &["512Mi", "4Gi", "1G", "1e9", "1024"],
    &["4gi", "1.5", "16Ei", "1e19", "Gi"],
);
const WINDOWS: Values = (
    &[
        "Mon-Fri 22:00-06:00",
        "Sat,Sun 00:00-24:00",
        "Fri-Mon 10:00-11:00",
        "Sun 23:59-00:00",
    ],
    &["Someday", "Mon 25:00-01:00", "Mon 1:00-2:00", ""],
);
const DURATIONS: Values = (
    &["1h", "90s", "1h30m", "2d", "0s"],
    &["soon", "1", "", "99999999999999999999d"],
);

fn leaf(values: Values) -> Schema {
    Schema::Leaf(values)
}

fn one(good: &'static [&'static str], bad: &'static [&'static str]) -> Schema {
    Schema::Leaf((good, bad))
}

fn map(fields: Vec<(&'static str, u8, Schema)>) -> Schema {
    Schema::Map(fields)
}

fn list(item: Schema) -> Schema {
    Schema::List(Box::new(item))
}

fn labels() -> Schema {
    map(vec![
        ("provider", 70, one(&["openstack", "gke", "sim"], &["a b"])),
        ("residency", 50, one(&["eu", "us"], &["€"])),
        ("tier", 50, leaf(STRINGS)),
        ("example.com/team", 20, leaf(NAMES)),
    ])
}

fn selector_fields() -> Vec<(&'static str, u8, Schema)> {
    let expression = map(vec![
        ("key", 90, one(&["provider", "tier", "residency"], &[])),
        (
            "operator",
            90,
            one(&["In", "NotIn", "Exists", "DoesNotExist"], &["in", "Equal"]),
        ),
        ("values", 60, list(leaf(STRINGS))),
    ]);
    vec![
        ("matchLabels", 60, labels()),
        ("matchExpressions", 40, list(expression)),
    ]
}

fn kubeconfig() -> Schema {
    map(vec![
        ("kubeconfig", 95, leaf(STRINGS)),
        ("context", 50, leaf(STRINGS)),
    ])
}

fn metadata(namespaced: bool) -> Schema {
    let mut fields = vec![
        ("name", 97, leaf(NAMES)),
        ("labels", 50, labels()),
        ("annotations", 20, labels()),
    ];
    if namespaced {
        fields.push(("namespace", 60, leaf(NAMES)));
    }
    map(fields)
}

fn document(kind: &'static str, spec: Schema, status: Option<Schema>, namespaced: bool) -> Schema {
    let kinds: Values = match kind {
        "Cluster" => (&["Cluster"], &["Workload", "Node", "cluster"]),
        "Workload" => (&["Workload"], &["PlacementPolicy", "Deployment"]),
        _ => (&["PlacementPolicy"], &["Cluster", "Policy"]),
    };
    let mut fields = vec![
        (
            "apiVersion",
            97,
            one(&["ferry.dev/v1alpha1"], &["v1", "ferry.dev/v1"]),
        ),
        ("kind", 97, leaf(kinds)),
        ("metadata", 97, metadata(namespaced)),
        ("spec", 97, spec),
    ];
    if let Some(status) = status {
        fields.push(("status", 40, status));
    }
    map(fields)
}

fn cluster() -> Schema {
    let resources = map(vec![
        ("cpu", 90, leaf(CPUS)),
        ("memory", 90, leaf(MEMORIES)),
    ]);
    let openstack = || {
        OneOf(vec![
            map(vec![
                ("cloud", 95, leaf(STRINGS)),
                ("region", 50, leaf(STRINGS)),
                ("kubernetes", 30, kubeconfig()),
                (
                    "heat",
                    95,
                    map(vec![
                        ("stack", 95, leaf(NAMES)),
                        ("parameters", 50, labels()),
                    ]),
                ),
                ("magnum", 3, map(vec![])),
            ]),
            map(vec![
                ("cloud", 95, leaf(STRINGS)),
                (
                    "magnum",
                    95,
                    map(vec![
                        ("clusterTemplate", 95, leaf(STRINGS)),
                        ("nodeCount", 95, leaf(INTEGERS)),
                    ]),
                ),
            ]),
            map(vec![
                ("cloud", 95, leaf(STRINGS)),
                ("kubernetes", 90, kubeconfig()),
            ]),
        ])
    };
    let gke = || {
        map(vec![
            ("project", 95, leaf(STRINGS)),
            ("location", 95, leaf(STRINGS)),
            ("cluster", 95, leaf(STRINGS)),
            ("credentialsFile", 40, leaf(STRINGS)),
        ])
    };
    let pricing = map(vec![
        ("currency", 40, one(&["USD", "EUR"], &["usd", "DOLLARS"])),
        ("cpuCoreHour", 95, leaf(NUMBERS)),
        ("memoryGiBHour", 95, leaf(NUMBERS)),
        ("egressGiB", 50, leaf(NUMBERS)),
    ]);
    let taint = map(vec![
        ("key", 95, leaf(STRINGS)),
        ("value", 50, leaf(STRINGS)),
        (
            "effect",
            95,
            one(&["NoSchedule", "PreferNoSchedule"], &["NoExecute"]),
        ),
    ]);
    // One spec per provider, with (mostly) the connection block that it needs.
    let spec = |provider: &'static [&'static str], blocks: [u8; 3]| {
        map(vec![
            ("provider", 97, one(provider, &["aws", "OpenStack"])),
            ("openstack", blocks[0], openstack()),
            ("gke", blocks[1], gke()),
            ("kubernetes", blocks[2], kubeconfig()),
            ("pricing", 95, pricing.clone()),
            ("capacity", 50, resources.clone()),
            ("reserved", 40, resources.clone()),
            ("taints", 40, list(taint.clone())),
        ])
    };
    let specs = OneOf(vec![
        spec(&["openstack"], [95, 3, 3]),
        spec(&["gke"], [3, 95, 3]),
        spec(&["kubernetes"], [3, 3, 95]),
        spec(&["sim"], [3, 3, 3]),
    ]);
    let status = map(vec![(
        "health",
        90,
        one(&["Ready", "Degraded", "Unreachable"], &["Gone"]),
    )]);
    document("Cluster", specs, Some(status), false)
}

use Schema::OneOf;

fn workload() -> Schema {
    let toleration = OneOf(vec![
        map(vec![
            ("key", 95, leaf(STRINGS)),
            ("operator", 50, one(&["Equal"], &["In"])),
            ("value", 50, leaf(STRINGS)),
            (
                "effect",
                50,
                one(&["NoSchedule", "PreferNoSchedule"], &["x"]),
            ),
        ]),
        map(vec![
            ("key", 50, leaf(STRINGS)),
            ("operator", 95, one(&["Exists"], &["exists"])),
            ("value", 3, leaf(STRINGS)),
            (
                "effect",
                50,
                one(&["NoSchedule", "PreferNoSchedule"], &["x"]),
            ),
        ]),
    ]);
    let spec = map(vec![
        ("replicas", 95, leaf(INTEGERS)),
        (
            "resources",
            95,
            map(vec![
                ("cpu", 80, leaf(CPUS)),
                ("memory", 80, leaf(MEMORIES)),
            ]),
        ),
        ("dataGiB", 40, leaf(NUMBERS)),
        ("tolerations", 40, list(toleration)),
    ]);
    document(
        "Workload",
        spec,
        Some(map(vec![("cluster", 80, leaf(NAMES))])),
        true,
    )
}

fn policy() -> Schema {
    let mut workload_selector = selector_fields();
    workload_selector.push(("namespaces", 50, list(leaf(NAMES))));
    let mut preferred = selector_fields();
    preferred.push(("weight", 95, leaf(INTEGERS)));
    let spec = map(vec![
        (
            "priority",
            50,
            one(&["-5", "0", "100", "1000000"], &["1000001", "high"]),
        ),
        ("workloadSelector", 60, map(workload_selector)),
        (
            "clusterAffinity",
            50,
            map(vec![
                ("required", 60, map(selector_fields())),
                ("preferred", 60, list(map(preferred))),
            ]),
        ),
        (
            "spread",
            40,
            map(vec![
                ("minClusters", 95, leaf(INTEGERS)),
                ("maxClusters", 60, leaf(INTEGERS)),
            ]),
        ),
        (
            "budget",
            40,
            map(vec![("maxMonthlyCost", 95, leaf(NUMBERS))]),
        ),
        (
            "objective",
            40,
            map(vec![
                ("cost", 60, leaf(NUMBERS)),
                ("preference", 60, leaf(NUMBERS)),
                ("stickiness", 60, leaf(NUMBERS)),
            ]),
        ),
        (
            "rebalance",
            50,
            map(vec![
                (
                    "enabled",
                    60,
                    one(&["true", "false"], &["yes", "True", "1"]),
                ),
                ("minSavingsPercent", 50, leaf(NUMBERS)),
                ("paybackHours", 50, leaf(NUMBERS)),
                ("cooldown", 50, leaf(DURATIONS)),
                ("maxConcurrentMigrations", 50, leaf(INTEGERS)),
                ("windows", 50, list(leaf(WINDOWS))),
            ]),
        ),
    ]);
    // A policy has no status: the rare one that comes with one must be refused.
    let status = map(vec![("health", 90, one(&["Ready"], &[]))]);
    map(match document("PlacementPolicy", spec, None, false) {
        Schema::Map(mut fields) => {
            fields.push(("status", 3, status));
            fields
        }
        _ => unreachable!("a document is a mapping"),
    })
}

/// Trees that mostly follow `schema`: now and then a value is bad, is replaced by an
/// arbitrary tree or is quoted, or an unknown or duplicate field is added.
fn follow(schema: &Schema) -> BoxedStrategy<Tree> {
    let conforming = match schema {
        Schema::Leaf((good, bad)) => {
            let values = if bad.is_empty() {
                select(*good).boxed()
            } else {
                prop_oneof![50 => select(*good), 1 => select(*bad)].boxed()
            };
            (values, proptest::bool::weighted(0.01))
                .prop_map(|(text, quoted)| scalar(text, quoted))
                .boxed()
        }
        Schema::List(item) => vec(follow(item), 0..4).prop_map(Tree::Seq).boxed(),
        Schema::OneOf(choices) => {
            proptest::strategy::Union::new(choices.iter().map(follow)).boxed()
        }
        Schema::Map(fields) => {
            let parts: Vec<BoxedStrategy<Option<(Tree, Tree)>>> = fields
                .iter()
                .map(|(name, percent, schema)| {
                    let key = scalar(name, false);
                    proptest::option::weighted(f64::from(*percent) / 100.0, follow(schema))
                        .prop_map(move |value| value.map(|value| (key.clone(), value)))
                        .boxed()
                })
                .collect();
            (
                parts,
                proptest::option::weighted(0.01, (arbitrary_key(), arbitrary_tree())),
            )
                .prop_map(|(parts, extra)| {
                    parts.into_iter().flatten().chain(extra).collect::<Vec<_>>()
                })
                .prop_shuffle()
                .prop_map(Tree::Map)
                .boxed()
        }
    };
    prop_oneof![200 => conforming, 1 => arbitrary_tree()].boxed()
}

fn resource_document() -> impl Strategy<Value = Tree> {
    prop_oneof![follow(&cluster()), follow(&workload()), follow(&policy())]
}

/// Renders `documents` and checks that they read back as exactly these trees (or are
/// refused for nesting too deep).
fn render_and_check(documents: &[Tree], seed: u64) -> String {
    let text = Renderer(seed | 1).documents(documents);
    let expected: Vec<Tree> = documents
        .iter()
        .filter(|d| **d != Tree::Null)
        .cloned()
        .collect();
    let within_limit = documents.iter().all(|d| depth(d) <= MAX_DEPTH);
    match yaml::parse_documents(&text) {
        Ok(parsed) if within_limit => assert_eq!(
            parsed.iter().map(bare).collect::<Vec<_>>(),
            expected,
            "read back\n{text}"
        ),
        Err(error) if !within_limit => assert!(error.message.contains("nesting"), "{error:?}"),
        result => panic!("well-formed YAML read as {result:?}\n{text}"),
    }
    text
}

fn depth(tree: &Tree) -> usize {
    match tree {
        Tree::Null | Tree::Scalar(..) => 0,
        Tree::Seq(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Tree::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| depth(k).max(depth(v)))
                .max()
                .unwrap_or(0)
        }
    }
}

// ---------------------------------------------------------------------------------------
// (d) Quantities, durations and windows.

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// `whole.fraction * scale` exactly, when it is a whole number that fits in a u64. Like
/// the parser, it refuses more than 18 significant fractional digits.
fn decimal_model(whole: u64, fraction: &str, scale: u64) -> Option<u64> {
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > 18 {
        return None;
    }
    let denominator = 10u128.pow(u32::try_from(fraction.len()).ok()?);
    let numerator: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    let part = numerator * u128::from(scale);
    if !part.is_multiple_of(denominator) {
        return None;
    }
    u64::try_from(u128::from(whole) * u128::from(scale) + part / denominator).ok()
}

fn quantity_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9.eEmkKMGTPi+ -]{0,24}",
        "[0-9]{0,25}(\\.[0-9]{0,25})?(m|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|e[0-9]{1,3})?",
        "[0-9smhd]{0,24}",
        concat!(
            "((Mon|Tue|Wed|Thu|Fri|Sat|Sun|Xyz)[-,]?){1,3} ?",
            "[0-9]{1,3}:[0-9]{1,3}-[0-9]{1,3}:[0-9]{1,3}"
        ),
        "\\PC{0,3}[0-9:, -]{0,20}",
    ]
}

/// The value parsers on any string: they return, accept only what their grammar allows,
/// and what they accept prints back to the same value.
fn check_value_parsers(text: &str) {
    assert_eq!(parse_cpu(text), parse_cpu(text));
    if let Ok(millis) = parse_cpu(text) {
        let grammar = |b: u8| b.is_ascii_digit() || b == b'.' || b == b'm';
        assert!(!text.is_empty() && text.bytes().all(grammar), "{text:?}");
        // `Cpu` prints through an f64, exact up to here (a billion cores).
        if millis <= 1_000_000_000_000 {
            assert_eq!(parse_cpu(&Cpu(millis).to_string()), Ok(millis), "{text:?}");
        }
    }
    if let Ok(bytes) = parse_memory(text) {
        let grammar = |b: u8| b.is_ascii_alphanumeric() || b == b'.';
        assert!(!text.is_empty() && text.bytes().all(grammar), "{text:?}");
        assert!(!Memory(bytes).to_string().is_empty());
    }
    if parse_duration(text).is_ok() {
        assert!(
            text.bytes().all(|b| b"0123456789smhd".contains(&b)),
            "{text:?}"
        );
    }
    if let Ok(window) = Window::parse(text) {
        assert_eq!(Window::parse(&window.to_string()), Ok(window), "{text:?}");
        for day in 0..7 {
            for minute in [0, 1, 359, 360, 719, 720, 1079, 1080, 1439, 1440, u16::MAX] {
                let _ = window.contains(day, minute);
            }
        }
    }
}

const MEMORY_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
    ("E", 1_000_000_000_000_000_000),
];

/// `whole.fraction` as cpu (cores or millicores) and as memory (with a unit or an
/// exponent) is what the model says, or refused when the model has no value.
fn check_quantities(
    whole: u64,
    fraction: &str,
    millicores: bool,
    unit: (&str, u64),
    exponent: u32,
) {
    let number = if fraction.is_empty() {
        whole.to_string()
    } else {
        format!("{whole}.{fraction}")
    };
    let (cpu, cpu_scale) = if millicores {
        (format!("{number}m"), 1)
    } else {
        (number.clone(), 1000)
    };
    assert_eq!(
        parse_cpu(&cpu).ok(),
        decimal_model(whole, fraction, cpu_scale),
        "{cpu}"
    );
    let (suffix, scale) = unit;
    let memory = format!("{number}{suffix}");
    assert_eq!(
        parse_memory(&memory).ok(),
        decimal_model(whole, fraction, scale),
        "{memory}"
    );
    let memory = format!("{number}e{exponent}");
    let expected = if exponent <= 18 {
        decimal_model(whole, fraction, 10u64.pow(exponent))
    } else {
        None
    };
    assert_eq!(parse_memory(&memory).ok(), expected, "{memory}");
}

const DURATION_UNITS: &[(char, u64)] = &[('s', 1), ('m', 60), ('h', 3600), ('d', 86_400)];

/// `1h30m`-style durations add up, or are refused when they overflow.
fn check_duration(parts: &[(u32, (char, u64))]) {
    let text: String = parts
        .iter()
        .map(|(n, (unit, _))| format!("{n}{unit}"))
        .collect();
    let seconds: u128 = parts
        .iter()
        .map(|(n, (_, scale))| u128::from(*n) * u128::from(*scale))
        .sum();
    assert_eq!(
        parse_duration(&text).ok(),
        u64::try_from(seconds).ok(),
        "{text}"
    );
}

/// `First-Last HH:MM-HH:MM` is accepted, prints back to itself, and opens on exactly the
/// days from First to Last (wrapping past Sunday).
fn check_window(first: usize, last: usize, start: (u16, u16), end: (u16, u16)) {
    let end = if end.0 == 24 { (24, 0) } else { end };
    let text = format!(
        "{}-{} {:02}:{:02}-{:02}:{:02}",
        DAYS[first], DAYS[last], start.0, start.1, end.0, end.1
    );
    let window = Window::parse(&text).unwrap_or_else(|error| panic!("{text} refused: {error}"));
    assert_eq!(Window::parse(&window.to_string()), Ok(window), "{text}");
    let (start_minute, end_minute) = (start.0 * 60 + start.1, end.0 * 60 + end.1);
    if start_minute < end_minute {
        for day in 0..7u8 {
            let named = (usize::from(day) + 7 - first) % 7 <= (last + 7 - first) % 7;
            assert_eq!(
                window.contains(day, start_minute),
                named,
                "{text} on day {day}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// The property tests. Their bodies live in the functions above, where rustfmt reaches.

proptest! {
    #![proptest_config(config(512))]

    /// (a) Any bytes at all.
    #[test]
    fn arbitrary_input_is_handled(text in arbitrary_text()) {
        check_source(&text);
    }

    /// (b) Every corpus file, damaged.
    #[test]
    fn mutated_corpus_files_are_handled(
        file in any::<Index>(),
        mutations in vec(mutation(), 1..5),
    ) {
        let (_, source) = &corpus()[file.index(corpus().len())];
        check_source(&mutate(source, &mutations));
    }

    /// (d) The value parsers on arbitrary strings.
    #[test]
    fn value_parsers_handle_any_string(text in quantity_text()) {
        check_value_parsers(&text);
    }

    /// (d) Well-formed quantities mean what they say.
    #[test]
    fn quantities_match_a_model(
        whole in prop_oneof![any::<u64>(), 0u64..10_000],
        fraction in "[0-9]{0,20}",
        millicores in any::<bool>(),
        unit in select(MEMORY_UNITS),
        exponent in 0u32..25,
    ) {
        check_quantities(whole, &fraction, millicores, unit, exponent);
    }

    /// (d) Durations add up; windows open on the days they name.
    #[test]
    fn durations_and_windows_match_a_model(
        parts in vec((any::<u32>(), select(DURATION_UNITS)), 1..5),
        first in 0usize..7,
        last in 0usize..7,
        start in (0u16..24, 0u16..60),
        end in (0u16..25, 0u16..60),
    ) {
        check_duration(&parts);
        check_window(first, last, start, end);
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// (c) Free-form YAML trees read back exactly, and parse without breaking anything.
    #[test]
    fn generated_trees_read_back(documents in vec(arbitrary_tree(), 1..4), seed in any::<u64>()) {
        check_source(&render_and_check(&documents, seed));
    }

    /// (c) Documents that follow the resource schema, with good and bad values.
    #[test]
    fn generated_resources_are_decoded_consistently(
        documents in vec(resource_document(), 1..4),
        seed in any::<u64>(),
    ) {
        check_source(&render_and_check(&documents, seed));
    }

    /// (b) + (c) Generated resources, damaged.
    #[test]
    fn mutated_generated_resources_are_handled(
        documents in vec(resource_document(), 1..3),
        seed in any::<u64>(),
        mutations in vec(mutation(), 1..5),
    ) {
        let text = Renderer(seed | 1).documents(&documents);
        check_source(&mutate(text.as_bytes(), &mutations));
    }
}

// ---------------------------------------------------------------------------------------
// (e) The corpus and very large inputs, deterministically.

#[test]
fn every_corpus_file_is_handled() {
    for (name, bytes) in corpus() {
        let text = String::from_utf8_lossy(bytes);
        let (resources, diagnostics) = check_source(&text);
        if name.starts_with("valid-") {
            let documents = yaml::parse_documents(&text).map(|d| d.len());
            assert!(diagnostics.is_empty(), "{name}: {diagnostics:#?}");
            assert!(
                !resources.is_empty() && Ok(resources.len()) == documents,
                "{name}: {resources:?}"
            );
        }
    }
}

#[test]
fn two_megabytes_of_documents() {
    let (_, unit) = corpus()
        .iter()
        .find(|(name, _)| name == "valid-multi-document.yaml")
        .expect("in the corpus");
    let unit = String::from_utf8_lossy(unit).replace("%YAML 1.2\n", "");
    let copies = (2 << 20) / unit.len() + 1;
    let text = unit.repeat(copies);
    let (resources, diagnostics) = check_source(&text);
    assert_eq!((resources.len(), diagnostics.len()), (3 * copies, 0));
    let mut set = ResourceSet::default();
    set.add_source(FILE, &text);
    // Every name is defined `copies` times: one cluster, one workload, one policy.
    assert_eq!(check_references(&set).len(), 3 * (copies - 1));
}

#[test]
fn ten_thousand_element_flow_sequences() {
    let windows: Vec<String> = (0..10_000)
        .map(|i| {
            format!(
                "\"{} {:02}:00-{:02}:30\"",
                DAYS[i % 7],
                i % 24,
                (i + 1) % 24
            )
        })
        .collect();
    let namespaces: Vec<String> = (0..10_000).map(|i| format!("ns{i}")).collect();
    let text = format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: PlacementPolicy\nmetadata: {{name: big}}\nspec:\n  \
         workloadSelector: {{namespaces: [{}]}}\n  rebalance: {{windows: [{}]}}\n",
        namespaces.join(", "),
        windows.join(", "),
    );
    let (resources, diagnostics) = check_source(&text);
    assert_eq!(diagnostics, []);
    let [
        Located {
            value: Resource::Policy(policy),
            ..
        },
    ] = resources.as_slice()
    else {
        panic!("one policy: {resources:?}")
    };
    assert_eq!(
        (
            policy.workload_selector.namespaces.len(),
            policy.rebalance.windows.len()
        ),
        (10_000, 10_000)
    );

    // Ten thousand wrong items are ten thousand diagnostics.
    let numbers: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
    let text = format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: c}}\nspec:\n  \
         provider: sim\n  pricing: {{cpuCoreHour: 1, memoryGiBHour: 1}}\n  taints: [{}]\n",
        numbers.join(",")
    );
    let (resources, diagnostics) = check_source(&text);
    assert!(resources.is_empty());
    assert_eq!(diagnostics.len(), 10_000);
    assert!(
        diagnostics
            .iter()
            .all(|d| d.message == "expected a mapping, found a scalar"),
        "{:?}",
        diagnostics[0]
    );
}

#[test]
fn fifty_thousand_documents() {
    let good: String = (0..50_000)
        .map(|i| {
            format!(
                "---\n{{apiVersion: ferry.dev/v1alpha1, kind: Workload, metadata: {{name: w{i}}}, \
                 spec: {{replicas: 1, resources: {{cpu: 1}}}}}}\n"
            )
        })
        .collect();
    let (resources, diagnostics) = check_source(&good);
    assert_eq!((resources.len(), diagnostics.len()), (50_000, 0));

    let (resources, diagnostics) = check_source(&"---\n".repeat(50_000));
    assert_eq!((resources.len(), diagnostics.len()), (0, 0));

    let (resources, diagnostics) = check_source(&"--- x\n".repeat(50_000));
    assert_eq!((resources.len(), diagnostics.len()), (0, 50_000));
}

#[test]
fn nesting_is_refused_exactly_beyond_the_limit() {
    let flow = |depth: usize| "[".repeat(depth) + &"]".repeat(depth);
    let block = |depth: usize| -> String {
        let keys: String = (0..depth)
            .map(|i| format!("{}k:\n", "  ".repeat(i)))
            .collect();
        keys + &"  ".repeat(depth) + "x\n"
    };
    for nested in [flow, block] {
        assert!(yaml::parse_documents(&nested(MAX_DEPTH)).is_ok());
        let error = yaml::parse_documents(&nested(MAX_DEPTH + 1)).expect_err("too deep");
        assert!(error.message.contains("nesting"), "{error:?}");
        check_source(&nested(MAX_DEPTH));
        check_source(&nested(MAX_DEPTH + 1));
    }
}

#[test]
fn pathological_shapes() {
    let inputs = [
        "[".repeat(100_000),
        "{a: ".repeat(100_000),
        "- ".repeat(100_000) + "x\n",
        (0..10_000)
            .map(|i| format!("{}k:\n", " ".repeat(i)))
            .collect(),
        format!("apiVersion: {}\n", "x".repeat(1 << 20)),
        format!("\"{}\": 1\n", "k".repeat(1 << 20)),
        format!("a: |\n{}", "  line\n".repeat(100_000)),
        format!("a: \"{}\"\n", "\\u0041".repeat(100_000)),
        "&a ".repeat(10_000) + "x\n",
        "!!str ".repeat(10_000) + "x\n",
        "# comment\n".repeat(100_000),
        "\n".repeat(1 << 20),
        "\r".repeat(1 << 20) + "a: [",
        ":".repeat(100_000),
        "? ".repeat(10_000) + "x\n",
        (0..100_000).map(|i| format!("k{i}: {i}\n")).collect(),
    ];
    for text in &inputs {
        check_source(text);
    }
}
