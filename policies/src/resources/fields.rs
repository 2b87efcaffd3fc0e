//! Decoding helpers over the positioned YAML tree. Each helper records a diagnostic and
//! returns `None` on bad input, so that decoding goes on and every error is reported.

use std::collections::BTreeMap;

use super::Diagnostic;
use super::yaml::{Node, Pos, Value};
use crate::quantity::{parse_cpu, parse_memory};

/// Collects the diagnostics of one file.
pub struct Ctx<'a> {
    file: &'a str,
    pub diagnostics: Vec<Diagnostic>,
    /// Where the fields that checks across documents point at were found, in the
    /// document being decoded (see [`super::Located::fields`]).
    pub marks: BTreeMap<String, Pos>,
}

impl<'a> Ctx<'a> {
    pub fn new(file: &'a str) -> Ctx<'a> {
        Ctx {
            file,
            diagnostics: Vec::new(),
            marks: BTreeMap::new(),
        }
    }

    /// Remembers where the field `path` is, for a later check across documents.
    pub fn mark(&mut self, path: &str, pos: Pos) {
        self.marks.insert(path.to_owned(), pos);
    }

    pub fn error(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            file: self.file.to_owned(),
            pos,
            path: path.to_owned(),
            message: message.into(),
        });
    }
}

/// `parent.child`, or `child` at the root.
pub fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

/// A mapping being decoded: remembers which keys were read so that the rest can be
/// reported as unknown.
pub struct Fields<'n> {
    pos: Pos,
    path: String,
    entries: &'n [(Node, Node)],
    used: Vec<bool>,
}

impl<'n> Fields<'n> {
    /// Starts decoding `node` as a mapping; a wrong shape is reported and yields `None`.
    pub fn of(ctx: &mut Ctx<'_>, node: &'n Node, path: &str) -> Option<Fields<'n>> {
        match &node.value {
            Value::Map(entries) => {
                let mut seen: BTreeMap<&str, Pos> = BTreeMap::new();
                for (key, _) in entries {
                    match &key.value {
                        Value::Scalar { text, .. } => {
                            if seen.insert(text.as_str(), key.pos).is_some() {
                                ctx.error(key.pos, &join(path, text), "duplicate key");
                            }
                        }
                        other => ctx.error(
                            key.pos,
                            path,
                            format!("expected a string key, found {}", other.shape()),
                        ),
                    }
                }
                Some(Fields {
                    pos: node.pos,
                    path: path.to_owned(),
                    entries,
                    used: vec![false; entries.len()],
                })
            }
            other => {
                ctx.error(
                    node.pos,
                    path,
                    format!("expected a mapping, found {}", other.shape()),
                );
                None
            }
        }
    }

    /// Where the mapping starts, for errors about missing fields.
    pub fn pos(&self) -> Pos {
        self.pos
    }

    /// The field path of `key` inside this mapping.
    pub fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Takes an optional field; a `null` value counts as absent.
    pub fn optional(&mut self, key: &str) -> Option<&'n Node> {
        let is_key =
            |(k, _): &(Node, Node)| matches!(&k.value, Value::Scalar { text, .. } if text == key);
        let index = self.entries.iter().position(is_key)?;
        // Later copies of the key were reported as duplicates already: they are not also
        // unknown fields.
        for (entry, used) in self.entries.iter().zip(self.used.iter_mut()) {
            if is_key(entry) {
                *used = true;
            }
        }
        let value = &self.entries[index].1;
        (value.value != Value::Null).then_some(value)
    }

    /// Takes a field that must be present.
    pub fn required(&mut self, ctx: &mut Ctx<'_>, key: &str) -> Option<&'n Node> {
        let node = self.optional(key);
        if node.is_none() {
            ctx.error(self.pos, &self.path_of(key), "missing required field");
        }
        node
    }

    /// Reports every key that was not taken, suggesting the closest known one.
    pub fn finish(self, ctx: &mut Ctx<'_>, known: &[&str]) {
        for ((key, _), used) in self.entries.iter().zip(&self.used) {
            if *used {
                continue;
            }
            let Value::Scalar { text, .. } = &key.value else {
                continue;
            };
            let hint = closest(text, known)
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_else(|| format!("; expected one of: {}", known.join(", ")));
            ctx.error(
                key.pos,
                &join(&self.path, text),
                format!("unknown field `{text}`{hint}"),
            );
        }
    }
}

/// The known name within edit distance 2 of `text`, if any.
pub fn closest<'k>(text: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(&text.to_lowercase(), &k.to_lowercase()), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// A scalar's text; sequences and mappings are reported.
pub fn scalar<'n>(
    ctx: &mut Ctx<'_>,
    node: &'n Node,
    path: &str,
    expected: &str,
) -> Option<(&'n str, bool)> {
    match &node.value {
        Value::Scalar { text, quoted } => Some((text.as_str(), *quoted)),
        other => {
            ctx.error(
                node.pos,
                path,
                format!("expected {expected}, found {}", other.shape()),
            );
            None
        }
    }
}

/// A string. Unquoted numbers and booleans are accepted as their text, as Kubernetes
/// does for label values written without quotes... except that a label value must be
/// a string in Kubernetes, so callers that care check `quoted` themselves.
pub fn string(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<String> {
    scalar(ctx, node, path, "a string").map(|(text, _)| text.to_owned())
}

/// A non-negative finite number written without quotes.
pub fn number(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<f64> {
    let (text, quoted) = scalar(ctx, node, path, "a number")?;
    match text.parse::<f64>() {
        Ok(value) if !quoted && value.is_finite() && value >= 0.0 => Some(value),
        Ok(_) if !quoted => {
            ctx.error(
                node.pos,
                path,
                format!("expected a non-negative number, found `{text}`"),
            );
            None
        }
        Ok(_) => {
            ctx.error(node.pos, path, quoted_number("a number", text));
            None
        }
        _ => {
            ctx.error(node.pos, path, format!("expected a number, found `{text}`"));
            None
        }
    }
}

/// An integer in `min..=max`, written without quotes.
pub fn integer(ctx: &mut Ctx<'_>, node: &Node, path: &str, min: i64, max: i64) -> Option<i64> {
    let (text, quoted) = scalar(ctx, node, path, "an integer")?;
    match text.parse::<i64>() {
        Ok(value) if !quoted && (min..=max).contains(&value) => Some(value),
        Ok(_) if !quoted => {
            ctx.error(
                node.pos,
                path,
                format!("expected an integer from {min} to {max}, found `{text}`"),
            );
            None
        }
        Ok(_) => {
            ctx.error(node.pos, path, quoted_number("an integer", text));
            None
        }
        _ => {
            ctx.error(
                node.pos,
                path,
                format!("expected an integer, found `{text}`"),
            );
            None
        }
    }
}

/// A number written in quotes is a string in YAML: say so, since the text itself looks
/// right to the person who wrote it.
fn quoted_number(expected: &str, text: &str) -> String {
    format!("expected {expected}, found the string \"{text}\"; remove the quotes")
}

/// `true` or `false`, written without quotes.
pub fn boolean(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<bool> {
    let (text, quoted) = scalar(ctx, node, path, "true or false")?;
    match (text, quoted) {
        ("true", false) => Some(true),
        ("false", false) => Some(false),
        _ => {
            ctx.error(
                node.pos,
                path,
                format!("expected true or false, found `{text}`"),
            );
            None
        }
    }
}

/// A cpu quantity in millicores.
pub fn cpu(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<u64> {
    let (text, _) = scalar(ctx, node, path, "a cpu quantity")?;
    parse_cpu(text)
        .map_err(|message| ctx.error(node.pos, path, message))
        .ok()
}

/// A memory quantity in bytes.
pub fn memory(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<u64> {
    let (text, _) = scalar(ctx, node, path, "a memory quantity")?;
    parse_memory(text)
        .map_err(|message| ctx.error(node.pos, path, message))
        .ok()
}

/// A sequence; each item is decoded by `item` with its indexed path.
pub fn list<T>(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    mut item: impl FnMut(&mut Ctx<'_>, &Node, &str) -> Option<T>,
) -> Option<Vec<T>> {
    let Value::Seq(items) = &node.value else {
        ctx.error(
            node.pos,
            path,
            format!("expected a sequence, found {}", node.value.shape()),
        );
        return None;
    };
    let mut values = Vec::with_capacity(items.len());
    let mut ok = true;
    for (index, child) in items.iter().enumerate() {
        match item(ctx, child, &format!("{path}[{index}]")) {
            Some(value) => values.push(value),
            None => ok = false,
        }
    }
    ok.then_some(values)
}

/// A list of strings.
pub fn string_list(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Vec<String>> {
    list(ctx, node, path, string)
}

/// A mapping of strings to strings, such as labels.
pub fn string_map(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<BTreeMap<String, String>> {
    let Value::Map(entries) = &node.value else {
        ctx.error(
            node.pos,
            path,
            format!("expected a mapping, found {}", node.value.shape()),
        );
        return None;
    };
    let mut map = BTreeMap::new();
    let mut ok = true;
    for (key, value) in entries {
        let Some(key_text) = string(ctx, key, path) else {
            ok = false;
            continue;
        };
        let child = join(path, &key_text);
        let value = match &value.value {
            Value::Null => Some(String::new()),
            _ => string(ctx, value, &child),
        };
        match value {
            Some(value) => {
                if map.insert(key_text, value).is_some() {
                    ctx.error(key.pos, &child, "duplicate key");
                    ok = false;
                }
            }
            None => ok = false,
        }
    }
    ok.then_some(map)
}

/// Kubernetes' DNS-1123 label: at most 63 lowercase alphanumerics or '-', starting and
/// ending with an alphanumeric.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
}

/// A name that must be a DNS-1123 label.
pub fn dns_label(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<String> {
    let name = string(ctx, node, path)?;
    if is_dns_label(&name) {
        Some(name)
    } else {
        ctx.error(
            node.pos,
            path,
            format!(
                "`{name}` is not a DNS-1123 label (lowercase letters, digits and '-', at most 63)"
            ),
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_use_edit_distance() {
        assert_eq!(
            closest("cpuCoreHuor", &["cpuCoreHour", "memoryGiBHour"]),
            Some("cpuCoreHour")
        );
        assert_eq!(closest("zzz", &["cpuCoreHour"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn dns_labels() {
        for (name, ok) in [
            ("openstack-dc1", true),
            ("a", true),
            ("-a", false),
            ("A", false),
            ("a_b", false),
            ("", false),
        ] {
            assert_eq!(is_dns_label(name), ok, "{name}");
        }
        assert!(!is_dns_label(&"a".repeat(64)));
    }
}
