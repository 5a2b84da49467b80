//! Problems found in a config, with the file, line and column they are at.

use std::fmt;

use super::keypath::KeyPath;

/// One problem, displayed as `FILE:LINE:COL: key.path: problem`.
///
/// `line` and `col` are 1-based (col counts characters) and point at the offending value, at the key
/// of an unknown key, or at the table header when a required key is missing. Both are 0 when the
/// problem concerns the file as a whole (it cannot be read); they are then left out of the display.
/// `key_path` is empty for TOML syntax errors. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub key_path: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file)?;
        if self.line > 0 {
            write!(f, "{}:{}:", self.line, self.col)?;
        }
        if !self.key_path.is_empty() {
            write!(f, " {}:", self.key_path)?;
        }
        write!(f, " {}", self.message)
    }
}

/// Every problem found in a config (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// Collects problems of several files. A problem whose key path equals or lies below the path of an
/// earlier *structural* problem (syntax, type, unknown or missing key) in the same file is dropped: it
/// would only be a consequence of the first (e.g. "ABP needs app_s_key" after "app_s_key: expected 32
/// hex digits").
#[derive(Default)]
pub(crate) struct Sink {
    problems: Vec<(usize, KeyPath, bool, ConfigProblem)>,
}

/// Where a problem is and what kind it is.
pub(crate) struct At<'t> {
    pub file_index: usize,
    pub file: &'t str,
    pub text: &'t str,
    /// Byte offset in `text`; `None` for the file as a whole.
    pub offset: Option<usize>,
    /// Structural problems hide later problems at or below their path.
    pub structural: bool,
}

impl Sink {
    pub(crate) fn push(&mut self, at: At<'_>, path: KeyPath, message: impl Into<String>) {
        let At { file_index, file, text, offset, structural } = at;
        if !path.is_root()
            && self.problems.iter().any(|(f, p, s, _)| *s && *f == file_index && !p.is_root() && path.starts_with(p))
        {
            return;
        }
        let (line, col) = match offset {
            Some(o) => line_col(text, o),
            None => (0, 0),
        };
        let problem =
            ConfigProblem { file: file.to_string(), line, col, key_path: path.to_string(), message: message.into() };
        self.problems.push((file_index, path, structural, problem));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// Problems in file order, then by position.
    pub(crate) fn into_errors(self) -> ConfigErrors {
        let mut v = self.problems;
        v.sort_by_key(|(f, _, _, p)| (*f, p.line, p.col));
        ConfigErrors(v.into_iter().map(|(_, _, _, p)| p).collect())
    }
}

/// `[A-Za-z0-9_.-]{1,64}`: device, source, zone, load, key and multicast group names.
pub(crate) fn name_problem(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    (!ok).then(|| format!("expected 1 to 64 characters of A-Z, a-z, 0-9, `_`, `.` and `-`, got {:?}", name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_chars() {
        let t = "a = 1\nbä = \"x\"\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        let off = t.find('"').unwrap();
        assert_eq!(line_col(t, off), (2, 6));
        assert_eq!(line_col(t, 10_000), (3, 1));
    }
}
