//! Active health checking shared by balancing (checks of a service's backends) and registration
//! (checks of this host's services): the rise/fall verdict and the probes that feed it.

mod check_state;
pub mod probe;

pub use check_state::CheckState;
