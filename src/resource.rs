//! Which OS errors mean this host ran out of something (descriptors, memory, buffers, local ports)
//! rather than that a peer failed. Such an error says nothing about the backend or the client, so
//! the proxy and the health checker both use this to keep it from being charged to either.

use std::error::Error;
use std::io;

/// A local resource that ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `EMFILE`: the process's open-file limit.
    ProcessFiles,
    /// `ENFILE`: the system's open-file limit.
    SystemFiles,
    /// `ENOBUFS`: socket buffers.
    Buffers,
    /// `ENOMEM`: kernel memory.
    Memory,
    /// `EADDRNOTAVAIL` on connect: no local port left.
    Ports,
}

impl Resource {
    /// The resource an OS error number says ran out, if it is one.
    pub fn of_errno(errno: i32) -> Option<Self> {
        use rustix::io::Errno;
        Some(match rustix::io::Errno::from_raw_os_error(errno) {
            Errno::MFILE => Self::ProcessFiles,
            Errno::NFILE => Self::SystemFiles,
            Errno::NOBUFS => Self::Buffers,
            Errno::NOMEM => Self::Memory,
            Errno::ADDRNOTAVAIL => Self::Ports,
            _ => return None,
        })
    }

    /// The resource an error (or any error it wraps) says ran out, if it is one.
    pub fn of_error(e: &(dyn Error + 'static)) -> Option<Self> {
        os_error(e).and_then(Self::of_errno)
    }

    /// Label value for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::ProcessFiles => "emfile",
            Self::SystemFiles => "enfile",
            Self::Buffers => "enobufs",
            Self::Memory => "enomem",
            Self::Ports => "eaddrnotavail",
        }
    }

    /// True for the descriptor limits, after which accepting more connections only fails again.
    pub fn is_descriptors(self) -> bool {
        matches!(self, Self::ProcessFiles | Self::SystemFiles)
    }
}

/// The OS error number in `e` or in any error it wraps.
pub fn os_error(e: &(dyn Error + 'static)) -> Option<i32> {
    let mut next = Some(e);
    while let Some(e) = next {
        next = match e.downcast_ref::<io::Error>() {
            Some(io) => match io.raw_os_error() {
                Some(errno) => return Some(errno),
                // An io::Error's `source` skips the error it wraps.
                None => io.get_ref().map(|inner| inner as &(dyn Error + 'static)),
            },
            None => e.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_resource_is_found_in_a_wrapped_error() {
        let emfile = io::Error::from_raw_os_error(24);
        assert_eq!(Resource::of_error(&emfile), Some(Resource::ProcessFiles));
        let wrapped = io::Error::other(emfile);
        assert_eq!(Resource::of_error(&wrapped), Some(Resource::ProcessFiles));
        let refused = io::Error::from_raw_os_error(111);
        assert_eq!(Resource::of_error(&refused), None);
        assert_eq!(Resource::of_error(&io::Error::other("tls")), None);
        assert!(Resource::ProcessFiles.is_descriptors() && !Resource::Ports.is_descriptors());
        let enfile = io::Error::from_raw_os_error(23);
        assert!(Resource::of_error(&enfile).is_some_and(Resource::is_descriptors));
    }
}
