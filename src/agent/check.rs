//! `sinew check`: load every file given, hand each translation warning to the caller, and decide
//! whether the result passes. Plain, it fails only when a whole service is skipped; `--strict`, also
//! when anything was ignored or is unsupported (every warning above a note).

use super::{Source, SourceError};
use crate::config::{Config, Level, Warning};

/// Why a check fails.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A file does not load, or the files do not combine.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Services would be skipped at run time.
    #[error("{count} service(s) skipped: {}", list.join("; "))]
    Skipped {
        /// How many.
        count: usize,
        /// Each skipped service's message.
        list: Vec<String>,
    },
    /// `--strict`: something is ignored, unsupported or skipped.
    #[error(
        "--strict: {count} setting(s) or service(s) ignored, unsupported or skipped (listed above)"
    )]
    Strict {
        /// How many warnings and errors.
        count: usize,
    },
}

/// Loads `source`, handing every warning to `report`; fails as described in the module doc.
pub fn check(
    source: &Source,
    strict: bool,
    mut report: impl FnMut(&Warning),
) -> Result<Config, CheckError> {
    let mut found = Vec::new();
    let config = source.load_reporting(|w| {
        report(w);
        found.push(w.clone());
    })?;
    let skipped: Vec<String> = found
        .iter()
        .filter(|w| w.level == Level::Error)
        .map(|w| w.message.clone())
        .collect();
    if strict {
        let count = found.iter().filter(|w| w.level != Level::Info).count();
        if count > 0 {
            return Err(CheckError::Strict { count });
        }
    }
    if !skipped.is_empty() {
        return Err(CheckError::Skipped {
            count: skipped.len(),
            list: skipped,
        });
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source of one Synapse file called `name`, holding `text`.
    fn synapse(name: &str, text: &str) -> Source {
        let dir = std::env::temp_dir().join(format!("sinew-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        Source {
            synapse_config: Some(path),
            ..Source::default()
        }
    }

    const OK: &str = r#""ok": {"discovery": {"method": "base"}, "haproxy": {"port": 4801}, "default_servers": [{"name": "a", "host": "127.0.0.1", "port": 1}]}"#;

    #[test]
    fn notes_pass_warnings_fail_only_strict_and_a_skipped_service_fails_both() {
        let notes = synapse(
            "notes.json",
            &format!(r#"{{"services": {{{OK}}}, "haproxy": {{"reload_command": "true"}}}}"#),
        );
        let mut seen = Vec::new();
        assert!(check(&notes, true, |w| seen.push(w.level)).is_ok());
        assert_eq!(seen, [Level::Info]);

        let ignored = synapse(
            "ignored.json",
            &format!(r#"{{"services": {{{OK}}}, "unknown_top": 1}}"#),
        );
        assert!(check(&ignored, false, |_| {}).is_ok());
        let e = check(&ignored, true, |_| {}).unwrap_err();
        assert!(matches!(e, CheckError::Strict { count: 1 }), "{e}");

        let skipped = synapse(
            "skipped.json",
            &format!(
                r#"{{"services": {{{OK}, "gone": {{"discovery": {{"method": "ec2tag"}}, "haproxy": {{"port": 4802}}}}}}}}"#
            ),
        );
        let e = check(&skipped, false, |_| {}).unwrap_err().to_string();
        assert!(e.starts_with("1 service(s) skipped: services.gone"), "{e}");
        assert!(matches!(
            check(&skipped, true, |_| {}),
            Err(CheckError::Strict { count: 1 })
        ));
    }
}
