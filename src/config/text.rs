//! Checks on a config file's text before any parser sees it.
//!
//! A truncated write (an editor killed mid-save, a full disk, a template that rendered nothing) leaves
//! an empty file. YAML reads an empty document as "every setting at its default", which for sinew means
//! "no services": a start that serves nothing, or a reload that closes every listener. So a file with
//! nothing in it but comments and document markers is an error, never an empty config.

/// What is wrong with a config file's text as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Nothing but whitespace, comments and document markers.
    #[error("the file is empty or holds only comments; a config without services says so with `services: {{}}`")]
    Blank,
}

/// Checks `text` before it is parsed.
pub fn check(text: &str) -> Result<(), TextError> {
    if is_blank(text) {
        return Err(TextError::Blank);
    }
    Ok(())
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
