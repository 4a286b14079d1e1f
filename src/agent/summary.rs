//! What a reload changed, as logged and as `POST /api/reload` answers.

use crate::register::RegisterChanges;

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Services started.
    pub added: Vec<String>,
    /// Services stopped.
    pub removed: Vec<String>,
    /// Services given a new generation.
    pub changed: Vec<String>,
    /// Services left alone.
    pub unchanged: usize,
    /// What changed on the registration side.
    pub registration: RegisterChanges,
    /// `admin.token` was set, replaced or removed.
    pub token_changed: bool,
}

impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "added [{}], removed [{}], changed [{}], {} unchanged",
            self.added.join(", "),
            self.removed.join(", "),
            self.changed.join(", "),
            self.unchanged
        )?;
        if self.token_changed {
            write!(f, "; admin.token replaced")?;
        }
        let r = &self.registration;
        if r != &RegisterChanges::default() {
            write!(
                f,
                "; registration: added [{}], removed [{}], changed [{}], {} unchanged",
                r.added.join(", "),
                r.removed.join(", "),
                r.changed.join(", "),
                r.unchanged
            )?;
        }
        Ok(())
    }
}
