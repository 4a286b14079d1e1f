//! Checks on a config file's text before any parser sees it: its size, whether it says anything, and
//! how deeply it nests. Each is one linear pass, so a broken or hostile file costs bounded memory and
//! CPU however it is written.
//!
//! A truncated write (an editor killed mid-save, a full disk, a template that rendered nothing) leaves
//! an empty file. YAML reads an empty document as "every setting at its default", which for sinew means
//! "no services": a start that serves nothing, or a reload that closes every listener. So a file with
//! nothing in it but comments and document markers is an error, never an empty config.
//!
//! The YAML parser's work grows with the nesting depth of flow collections (`[`, `{`) times the length
//! of the file: 100,000 levels in 200 KB took 25 s of CPU. sinew's configs nest a few levels, so
//! anything past [`MAX_DEPTH`] is refused by a pre-scan before the parser starts. The pre-scan follows
//! quoted scalars and comments, and also counts brackets inside quotes; text built to look quoted to
//! it while the parser reads it as plain could hide brackets from it, so the size cap stays the last
//! bound. Each parsed byte costs some 40 bytes of parser state and config model at the peak, which
//! [`MAX_BYTES`] bounds; a rejected file's memory is returned once it is dropped.

use std::io::Read;
use std::path::Path;

/// Largest config file read (4 MiB): many times a large Synapse config, and it bounds the memory a
/// parse takes at its peak.
pub const MAX_BYTES: usize = 4 << 20;

/// Deepest nesting of flow collections (`[`, `{`) accepted.
pub const MAX_DEPTH: usize = 64;

/// What is wrong with a config file's text as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Nothing but whitespace, comments and document markers.
    #[error("the file is empty or holds only comments; a config without services says so with `services: {{}}`")]
    Blank,
    /// Larger than [`MAX_BYTES`].
    #[error("the file is larger than {} MiB, the most a config may be", MAX_BYTES >> 20)]
    TooLarge,
    /// Flow collections nested deeper than [`MAX_DEPTH`].
    #[error("nested deeper than {MAX_DEPTH} levels of [ ] or {{ }} at line {line}; no config needs that")]
    TooDeep {
        /// The line where the limit was passed.
        line: usize,
    },
}

/// Checks `text` before it is parsed.
pub fn check(text: &str) -> Result<(), TextError> {
    if text.len() > MAX_BYTES {
        return Err(TextError::TooLarge);
    }
    if is_blank(text) {
        return Err(TextError::Blank);
    }
    if let Some(line) = too_deep(text) {
        return Err(TextError::TooDeep { line });
    }
    Ok(())
}

/// Reads a config file, refusing one larger than [`MAX_BYTES`] without reading all of it.
pub fn read(path: &Path) -> std::io::Result<String> {
    let too_large = || std::io::Error::new(std::io::ErrorKind::InvalidData, TextError::TooLarge);
    let limit = u64::try_from(MAX_BYTES).unwrap_or(u64::MAX);
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() > limit {
        return Err(too_large());
    }
    // Bounded again while reading, for a file that grows in the meantime.
    let mut text = String::new();
    file.take(limit.saturating_add(1))
        .read_to_string(&mut text)?;
    if text.len() > MAX_BYTES {
        return Err(too_large());
    }
    Ok(text)
}

/// The line where flow collections first nest deeper than [`MAX_DEPTH`], if they do. Two counts are
/// kept: one that skips quoted scalars as YAML does, and one that also counts brackets inside them, so
/// that a quote the scan misreads cannot hide a deep nest from both.
fn too_deep(text: &str) -> Option<usize> {
    let (mut line, mut aware, mut naive) = (1usize, 0usize, 0usize);
    let (mut comment, mut quote) = (false, None::<char>);
    // The previous character, and the previous one outside quotes and comments that is not whitespace.
    let (mut prev, mut sig) = ('\n', '\n');
    let mut chars = text.chars().peekable();
    let step = |c: char, depth: &mut usize| match c {
        '[' | '{' => *depth += 1,
        ']' | '}' => *depth = depth.saturating_sub(1),
        _ => {}
    };
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
            comment = false;
        } else if comment {
        } else if let Some(q) = quote {
            step(c, &mut naive);
            match c {
                // An escaped character, a line break included, never ends the scalar.
                '\\' if q == '"' => line += usize::from(chars.next() == Some('\n')),
                '\'' if q == '\'' && chars.peek() == Some(&'\'') => {
                    chars.next();
                }
                _ if c == q => {
                    quote = None;
                    sig = c;
                }
                _ => {}
            }
        } else if c == '#' && prev.is_whitespace() {
            comment = true;
        } else if (c == '\'' || c == '"') && starts_node(sig, prev) {
            quote = Some(c);
        } else if !c.is_whitespace() {
            step(c, &mut naive);
            step(c, &mut aware);
            sig = c;
        }
        if aware.max(naive) > MAX_DEPTH {
            return Some(line);
        }
        prev = c;
    }
    None
}

/// True when a quote after `sig` (the last significant character) and `prev` (the one just before)
/// begins a quoted scalar: after a flow indicator, after an indicator followed by a space, or first in
/// the file.
fn starts_node(sig: char, prev: char) -> bool {
    matches!(sig, '[' | '{' | ',' | '\n')
        || (matches!(sig, ':' | '-' | '?') && prev.is_whitespace())
}

/// True when every line is blank, a comment, or a YAML document marker (`---`, `...`).
fn is_blank(text: &str) -> bool {
    text.lines().map(str::trim).all(|l| {
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..." || l.starts_with("--- #")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_refused_before_parsing_and_quickly() {
        let deep = format!("services: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let started = std::time::Instant::now();
        assert_eq!(check(&deep), Err(TextError::TooDeep { line: 1 }));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let braces = format!("a:\n  b: {}\n", "{ x: ".repeat(65));
        assert_eq!(check(&braces), Err(TextError::TooDeep { line: 2 }));
        // Brackets hidden in quoted text by a close bracket in another quote: the second count sees them.
        let hidden = format!("x: a 'b\ny: {}\n", "[ \"]\", ".repeat(100));
        assert!(
            matches!(check(&hidden), Err(TextError::TooDeep { .. })),
            "{hidden}"
        );
        let ok = format!("a: {}{}\n", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(check(&ok), Ok(()));
    }

    #[test]
    fn comments_and_quoted_brackets_are_read_as_yaml_reads_them() {
        let commented = format!("a: 1 # {}\nb: [1]\n", "[".repeat(100));
        assert_eq!(check(&commented), Ok(()));
        assert_eq!(check("c: [x, 'it''s ]', \"q\\\" ]\", {d: [1]}]\n"), Ok(()));
        // Unbalanced brackets inside quotes count for the second count: refused, though YAML would
        // read them as text. No config writes 65 of them.
        let quoted = format!("a: '{}'\n", "[".repeat(MAX_DEPTH + 1));
        assert!(check(&quoted).is_err());
    }

    #[test]
    fn the_size_is_capped() {
        let big = format!("services: {{}}\n#{}\n", "x".repeat(MAX_BYTES));
        assert_eq!(check(&big), Err(TextError::TooLarge));
    }

    #[test]
    fn empty_and_comment_only_files_are_blank() {
        for text in [
            "",
            "\n\n",
            "  \n",
            "# only a comment\n",
            "---\n# x\n...\n",
            "--- # doc\n",
        ] {
            assert_eq!(check(text), Err(TextError::Blank), "{text:?}");
        }
        for text in [
            "services: {}",
            "{}",
            "admin: { listen: 127.0.0.1:1 }\n",
            "# c\nservices:\n",
        ] {
            assert_eq!(check(text), Ok(()), "{text:?}");
        }
    }
}
