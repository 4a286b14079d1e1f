//! Relative paths in a config resolve from the directory of the file that names them, not from the
//! working directory, so `sinew run --config /etc/sinew/sinew.yaml` reads the same files wherever it
//! is started from. Absolute paths are kept as they are.

use super::{Config, DiscoveryConfig};
use std::path::{Path, PathBuf};

/// `path` read from a file in `dir`: joined to `dir` when relative.
pub fn resolve(dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    }
}

/// The directory relative paths in `file` are read from (empty for a bare file name: the working
/// directory, where such a file was found).
pub fn base_of(file: &Path) -> &Path {
    file.parent().unwrap_or(Path::new(""))
}

fn fix(dir: &Path, path: &mut PathBuf) {
    *path = resolve(dir, path);
}

fn fix_opt(dir: &Path, path: &mut Option<PathBuf>) {
    if let Some(p) = path {
        fix(dir, p);
    }
}

impl Config {
    /// Resolves every path of the config (admin upgrade socket, state file, output directory,
    /// discovery files, TLS certificates, keys and CAs) against `dir`.
    pub fn resolve_paths(&mut self, dir: &Path) {
        fix_opt(dir, &mut self.admin.upgrade_socket);
        if let Some(s) = &mut self.state_file {
            fix(dir, &mut s.path);
        }
        if let Some(o) = &mut self.file_output {
            fix(dir, &mut o.directory);
        }
        for svc in self.services.values_mut() {
            if let Some(DiscoveryConfig::File(p)) = &mut svc.discovery {
                fix(dir, p);
            }
            if let Some(t) = &mut svc.tls_upstream {
                fix_opt(dir, &mut t.ca_file);
                fix_opt(dir, &mut t.client_cert);
                fix_opt(dir, &mut t.client_key);
            }
            if let Some(t) = &mut svc.tls_listen {
                fix(dir, &mut t.cert);
                fix(dir, &mut t.key);
                fix_opt(dir, &mut t.client_ca);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Format;

    #[test]
    fn every_relative_path_resolves_from_the_file_and_absolute_ones_stay() {
        let text = "admin: { upgrade_socket: run/up.sock }\nstate_file: { path: state.json }\nfile_output: { directory: /abs/out }\nservices:\n  f:\n    listen: 127.0.0.1:1\n    discovery: { file: ../b.json }\n  t:\n    listen: 127.0.0.1:2\n    mode: http\n    backends: [127.0.0.1:3]\n    tls_upstream: { ca_file: ca.pem, client_cert: c.pem, client_key: /k.pem }\n    tls_listen: { cert: s.pem, key: s.key, client_ca: cca.pem }\n";
        let c = Config::parse(text, Format::Yaml, Path::new("/etc/sinew/sinew.yaml")).unwrap();
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(c.admin.upgrade_socket, Some(p("/etc/sinew/run/up.sock")));
        assert_eq!(c.state_file.unwrap().path, p("/etc/sinew/state.json"));
        assert_eq!(c.file_output.unwrap().directory, p("/abs/out"));
        assert_eq!(
            c.services["f"].discovery,
            Some(DiscoveryConfig::File(p("/etc/sinew/../b.json")))
        );
        let up = c.services["t"].tls_upstream.clone().unwrap();
        assert_eq!(
            (up.ca_file, up.client_cert, up.client_key),
            (
                Some(p("/etc/sinew/ca.pem")),
                Some(p("/etc/sinew/c.pem")),
                Some(p("/k.pem"))
            )
        );
        let l = c.services["t"].tls_listen.clone().unwrap();
        assert_eq!(
            (l.cert, l.key, l.client_ca),
            (
                p("/etc/sinew/s.pem"),
                p("/etc/sinew/s.key"),
                Some(p("/etc/sinew/cca.pem"))
            )
        );
        let bare = Config::parse(text, Format::Yaml, Path::new("sinew.yaml")).unwrap();
        assert_eq!(bare.state_file.unwrap().path, p("state.json"));
    }
}
