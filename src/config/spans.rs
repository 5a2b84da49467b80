//! Key paths (`device[3].app_s_key`) and their positions in the spanned TOML document.

use std::ops::Range;

use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

pub(crate) use super::keypath::{KeyPath, Seg};
use super::problem::{At, Sink};

/// The entry `key` of a table value.
pub(crate) fn entry<'v, 'a>(
    node: &'v Spanned<DeValue<'a>>,
    key: &str,
) -> Option<(&'v Spanned<std::borrow::Cow<'a, str>>, &'v Spanned<DeValue<'a>>)> {
    match node.get_ref() {
        DeValue::Table(t) => t.iter().find(|(k, _)| k.get_ref().as_ref() == key),
        _ => None,
    }
}

/// The span of the value at `path`, or of the deepest enclosing value that exists (for a missing key:
/// its table, i.e. the table header or the inline table).
pub(crate) fn lookup(root: &Spanned<DeValue<'_>>, path: &KeyPath) -> Range<usize> {
    let mut cur = root;
    for seg in &path.0 {
        let next = match (seg, cur.get_ref()) {
            (Seg::Key(k), DeValue::Table(_)) => entry(cur, k).map(|(_, v)| v),
            (Seg::Index(i), DeValue::Array(a)) => a.get(*i),
            _ => None,
        };
        match next {
            Some(v) => cur = v,
            None => break,
        }
    }
    cur.span()
}

/// Finds the node an error span refers to: the deepest key or value with exactly that span, else the
/// smallest value containing it. Returns its path relative to `node`.
pub(crate) fn locate(node: &Spanned<DeValue<'_>>, span: &Range<usize>) -> Option<KeyPath> {
    struct Best {
        exact: Option<(usize, KeyPath)>,
        containing: Option<(usize, KeyPath)>,
    }
    fn walk(v: &Spanned<DeValue<'_>>, path: &KeyPath, span: &Range<usize>, best: &mut Best) {
        let s = v.span();
        let depth = path.0.len();
        if s == *span && best.exact.as_ref().is_none_or(|(d, _)| depth >= *d) {
            best.exact = Some((depth, path.clone()));
        }
        if s.start <= span.start && span.end <= s.end && best.containing.as_ref().is_none_or(|(len, _)| s.len() <= *len)
        {
            best.containing = Some((s.len(), path.clone()));
        }
        match v.get_ref() {
            DeValue::Table(t) => {
                for (k, child) in t.iter() {
                    let p = path.key(k.get_ref());
                    if k.span() == *span {
                        best.exact = Some((depth + 1, p.clone()));
                    }
                    walk(child, &p, span, best);
                }
            }
            DeValue::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    walk(child, &path.index(i), span, best);
                }
            }
            _ => {}
        }
    }
    let mut best = Best { exact: None, containing: None };
    walk(node, &KeyPath::root(), span, &mut best);
    match (best.exact, best.containing) {
        (Some((_, p)), _) | (None, Some((_, p))) => Some(p),
        (None, None) => None,
    }
}

/// Removes the deepest table entry (by key or value span) or array element (by value span) with
/// exactly `span` from below `node`. Returns whether something was removed.
pub(crate) fn remove_by_span(node: &mut Spanned<DeValue<'_>>, span: &Range<usize>) -> bool {
    match node.get_mut() {
        DeValue::Table(t) => {
            for (_, child) in t.iter_mut() {
                if remove_by_span(child, span) {
                    return true;
                }
            }
            let hit =
                t.iter().find(|(k, v)| k.span() == *span || v.span() == *span).map(|(k, _)| k.get_ref().to_string());
            match hit {
                Some(name) => t.remove(name.as_str()).is_some(),
                None => false,
            }
        }
        DeValue::Array(a) => {
            for child in a.iter_mut() {
                if remove_by_span(child, span) {
                    return true;
                }
            }
            if a.iter().any(|c| c.span() == *span) {
                let mut kept = DeArray::new();
                for c in a.iter().filter(|c| c.span() != *span) {
                    kept.push(c.clone());
                }
                *a = kept;
                true
            } else {
                false
            }
        }
        _ => false,
    }
}

/// A copy of the table `node` without the entry `key`, and that entry's value.
pub(crate) fn split_off<'a>(
    node: &Spanned<DeValue<'a>>,
    key: &str,
) -> (Spanned<DeValue<'a>>, Option<Spanned<DeValue<'a>>>) {
    let mut rest = node.clone();
    let mut taken = None;
    if let DeValue::Table(t) = rest.get_mut() {
        taken = t.remove(key);
    }
    (rest, taken)
}

/// One parsed TOML file.
pub(crate) struct Doc<'a> {
    pub index: usize,
    pub label: String,
    pub text: &'a str,
    pub root: Spanned<DeValue<'a>>,
}

impl<'a> Doc<'a> {
    /// Parses `text`; on syntax errors reports them all and returns `None`.
    pub(crate) fn parse(index: usize, label: &str, text: &'a str, sink: &mut Sink) -> Option<Self> {
        let (table, errors): (Spanned<DeTable<'a>>, _) = DeTable::parse_recoverable(text);
        let doc = Doc {
            index,
            label: label.to_string(),
            text,
            root: Spanned::new(table.span(), DeValue::Table(table.into_inner())),
        };
        if errors.is_empty() {
            return Some(doc);
        }
        for e in errors {
            let msg = e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
            let offset = e.span().map_or(0, |s| s.start);
            sink.push(doc.at(Some(offset), true), KeyPath::root(), format!("TOML syntax error: {msg}"));
        }
        None
    }

    pub(crate) fn at(&self, offset: Option<usize>, structural: bool) -> At<'_> {
        At { file_index: self.index, file: &self.label, text: self.text, offset, structural }
    }

    /// A semantic problem at `path`: at its value, or at the nearest enclosing table if it is absent.
    pub(crate) fn problem(&self, sink: &mut Sink, path: KeyPath, msg: impl Into<String>) {
        let span = lookup(&self.root, &path);
        sink.push(self.at(Some(span.start), false), path, msg);
    }

    /// The node at `path`, if it exists.
    pub(crate) fn node(&self, path: &KeyPath) -> Option<&Spanned<DeValue<'a>>> {
        let mut cur = &self.root;
        for seg in &path.0 {
            cur = match (seg, cur.get_ref()) {
                (Seg::Key(k), DeValue::Table(_)) => entry(cur, k)?.1,
                (Seg::Index(i), DeValue::Array(a)) => a.get(*i)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// Whether the table at `path` has the key `key` (whatever its value).
    pub(crate) fn has(&self, path: &KeyPath, key: &str) -> bool {
        self.node(path).is_some_and(|n| entry(n, key).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_display() {
        let p = KeyPath::root().key("device").index(3).key("app_s_key");
        assert_eq!(p.to_string(), "device[3].app_s_key");
        assert_eq!(KeyPath::root().key("a b").to_string(), "\"a b\"");
        assert!(p.starts_with(&KeyPath::root().key("device").index(3)));
    }

    #[test]
    fn lookup_and_locate() {
        let text = "[gateway]\nid = \"x\"\n[[device]]\nname = \"a\"\n[[device]]\nname = \"b\"\n";
        let mut sink = Sink::default();
        let doc = Doc::parse(0, "t.toml", text, &mut sink).unwrap();
        let p = KeyPath::root().key("device").index(1).key("name");
        let span = lookup(&doc.root, &p);
        assert_eq!(&text[span.clone()], "\"b\"");
        assert_eq!(locate(&doc.root, &span), Some(p));
        let missing = lookup(&doc.root, &KeyPath::root().key("gateway").key("data_dir"));
        assert_eq!(&text[missing], "[gateway]");
    }
}
