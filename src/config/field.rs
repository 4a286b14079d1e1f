//! A setting that is wrong: its dotted path and what is wrong with it, as the checks of each section
//! return it before the loader adds the file name.

/// One wrong setting, with its path relative to the section that checked it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    /// Dotted path of the setting (`retries.attempts`), relative to the section that checked it.
    pub field: String,
    /// What is wrong, for the operator.
    pub problem: String,
}

impl FieldError {
    /// `field` is wrong because of `problem`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The same error with its path placed under `section`; an empty path names the section itself.
    pub fn under(self, section: &str) -> Self {
        let field = if self.field.is_empty() {
            section.to_string()
        } else {
            format!("{section}.{}", self.field)
        };
        Self { field, ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_prefixes_the_section_and_names_it_for_an_empty_path() {
        for (field, section, want) in [
            ("port", "register", "register.port"),
            (
                "timeouts.idle",
                "services.web",
                "services.web.timeouts.idle",
            ),
            ("", "services.web", "services.web"),
        ] {
            let e = FieldError::new(field, "wrong").under(section);
            assert_eq!((e.field.as_str(), e.problem.as_str()), (want, "wrong"));
        }
    }

    #[test]
    fn displays_field_then_problem() {
        let e = FieldError::new("services.db.port", "must be 1-65535");
        assert_eq!(e.to_string(), "services.db.port: must be 1-65535");
    }
}
