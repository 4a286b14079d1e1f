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
        changes(f, &self.added, &self.removed, &self.changed, self.unchanged)?;
        if self.token_changed {
            write!(f, "; admin.token replaced")?;
        }
        let r = &self.registration;
        if r != &RegisterChanges::default() {
            write!(f, "; registration: ")?;
            changes(f, &r.added, &r.removed, &r.changed, r.unchanged)?;
        }
        Ok(())
    }
}

/// One side's changes, as `added [..], removed [..], changed [..], N unchanged`.
fn changes(
    f: &mut std::fmt::Formatter<'_>,
    added: &[String],
    removed: &[String],
    changed: &[String],
    unchanged: usize,
) -> std::fmt::Result {
    write!(
        f,
        "added [{}], removed [{}], changed [{}], {unchanged} unchanged",
        added.join(", "),
        removed.join(", "),
        changed.join(", "),
    )
}
