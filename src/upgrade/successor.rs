//! Starting the successor from the running process (SIGUSR2): the binary at the path this process was
//! started from, with the same arguments and `--takeover`, so that under a service manager the new
//! process belongs to the same service as the old one.

use std::ffi::OsString;
use std::path::Path;

/// The program and arguments of a successor: this command line with `--takeover PATH` in place of any
/// earlier one. `None` for an empty command line.
pub fn command(
    args: impl IntoIterator<Item = OsString>,
    path: &Path,
) -> Option<(OsString, Vec<OsString>)> {
    let mut args = args.into_iter();
    let program = args.next()?;
    let mut kept = Vec::new();
    while let Some(arg) = args.next() {
        if arg == "--takeover" {
            args.next();
            continue;
        }
        if arg.as_encoded_bytes().starts_with(b"--takeover=") {
            continue;
        }
        kept.push(arg);
    }
    kept.push("--takeover".into());
    kept.push(path.as_os_str().to_owned());
    Some((program, kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn the_successor_gets_the_same_arguments_and_one_takeover() {
        let path = Path::new("/run/sinew/upgrade.sock");
        let (program, rest) =
            command(args("/usr/bin/sinew run --config /etc/s.yaml"), path).unwrap();
        assert_eq!(program, "/usr/bin/sinew");
        assert_eq!(
            rest,
            args("run --config /etc/s.yaml --takeover /run/sinew/upgrade.sock")
        );
        let (_, rest) = command(
            args("sinew --log-format json run --takeover /old.sock --config c --takeover=/x"),
            path,
        )
        .unwrap();
        assert_eq!(
            rest,
            args("--log-format json run --config c --takeover /run/sinew/upgrade.sock")
        );
        assert!(command(Vec::new(), path).is_none());
    }
}
