//! What a statement may reach outside the database: which files (under one root directory, or
//! none) and which network hosts (those listed, or any). One policy object is consulted by
//! every opener of a file or a connection (COPY, module paths, file sinks and sources, the
//! `files/append` and `http/post` effects, `http()` sinks, `http_get`, `postgres()`), so a rule
//! holds everywhere or nowhere.
//!
//! `weft serve` confines its clients (no files unless `--files-root`, no hosts unless
//! `--allow-hosts`); the local CLI keeps its user's reach. Link-local, multicast and unspecified
//! addresses (cloud metadata services live at 169.254.169.254) are refused always, whether
//! written as an address or reached through a name.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Component, Path, PathBuf};

/// Why a file or host is out of reach. Messages name the path or host, never a file's contents.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AccessError {
    /// The server gives its clients no file access.
    #[error(
        "permission denied for file {0:?}: this server gives clients no file access (start it with --files-root DIR)"
    )]
    NoFiles(String),
    /// The path leaves the files root (`..`, an absolute path elsewhere, a symbolic link out).
    #[error("permission denied for file {path:?}: it is outside the files root {root}")]
    OutsideRoot {
        /// The path asked for.
        path: String,
        /// The files root.
        root: String,
    },
    /// The host is not among those allowed.
    #[error("permission denied for host {0:?}: not in this server's --allow-hosts")]
    HostNotAllowed(String),
    /// The address is link-local, multicast or unspecified.
    #[error("permission denied for {0}: link-local, multicast and unspecified addresses are never reached")]
    ForbiddenAddress(String),
    /// The URL or connection string names no host weft can check.
    #[error("cannot tell the host of {0:?}")]
    NoHost(String),
}

/// Which files may be read and written.
#[derive(Clone, Debug, PartialEq)]
pub enum Files {
    /// Any path (the local user's own command line).
    Anywhere,
    /// Paths under this directory (canonical), relative ones resolved in it.
    Under(PathBuf),
    /// None.
    Nowhere,
}

/// Which hosts may be connected to.
#[derive(Clone, Debug, PartialEq)]
pub enum Hosts {
    /// Any host (still never a link-local, multicast or unspecified address).
    Any,
    /// These `host` or `host:port` entries (names compared without case).
    Only(Vec<(String, Option<u16>)>),
}

/// What statements may reach: files and hosts.
#[derive(Clone, Debug, PartialEq)]
pub struct Access {
    /// The files statements may read and write.
    pub files: Files,
    /// The hosts statements may connect to.
    pub hosts: Hosts,
}

impl Access {
    /// The local user's reach: any file, any host (never a forbidden address).
    pub fn unrestricted() -> Access {
        Access { files: Files::Anywhere, hosts: Hosts::Any }
    }

    /// A server's clients' reach: files under `files_root` (none without it), the hosts of
    /// `allow_hosts` (`host` or `host:port` entries; none when empty).
    pub fn confined(files_root: Option<&Path>, allow_hosts: &[String]) -> Result<Access, String> {
        let files = match files_root {
            Some(root) => {
                Files::Under(root.canonicalize().map_err(|error| format!("--files-root {}: {error}", root.display()))?)
            }
            None => Files::Nowhere,
        };
        let mut hosts = Vec::new();
        for entry in allow_hosts.iter().flat_map(|entry| entry.split(',')).map(str::trim).filter(|e| !e.is_empty()) {
            hosts.push(split_host_port(entry).ok_or_else(|| format!("--allow-hosts: cannot read {entry:?}"))?);
        }
        Ok(Access { files, hosts: Hosts::Only(hosts) })
    }

    /// The path to open for `path` as a statement wrote it: refused if it leaves the files root
    /// (`..`, an absolute path elsewhere, a symbolic link pointing out), resolved in the root if
    /// relative.
    pub fn file(&self, path: &str) -> Result<PathBuf, AccessError> {
        let root = match &self.files {
            Files::Anywhere => return Ok(PathBuf::from(path)),
            Files::Nowhere => return Err(AccessError::NoFiles(path.to_string())),
            Files::Under(root) => root,
        };
        let outside = || AccessError::OutsideRoot { path: path.to_string(), root: root.display().to_string() };
        let written = Path::new(path);
        if written.components().any(|component| matches!(component, Component::ParentDir)) {
            return Err(outside());
        }
        let joined = root.join(written);
        // The deepest part that exists, with every link followed, must stay under the root;
        // what does not exist yet is created below it.
        let mut existing = joined.as_path();
        let mut rest = Vec::new();
        let resolved = loop {
            match existing.canonicalize() {
                Ok(resolved) => break resolved,
                Err(_) => {
                    rest.push(existing.file_name().ok_or_else(outside)?.to_os_string());
                    existing = existing.parent().ok_or_else(outside)?;
                }
            }
        };
        if !resolved.starts_with(root) {
            return Err(outside());
        }
        Ok(rest.into_iter().rev().fold(resolved, |path, part| path.join(part)))
    }

    /// Checks that `url` (`http://`, `https://`, `ipfs://`, `file:`) may be reached.
    pub fn url(&self, url: &str) -> Result<(), AccessError> {
        if let Some(path) = url.strip_prefix("file:") {
            return self.file(path.trim_start_matches("//")).map(|_| ());
        }
        let (scheme, rest) = url.split_once("://").ok_or_else(|| AccessError::NoHost(url.to_string()))?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
        let (host, port) = split_host_port(authority).ok_or_else(|| AccessError::NoHost(url.to_string()))?;
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "https" => 443,
            _ => 80,
        };
        self.host(&host, port.unwrap_or(default_port))
    }

    /// Checks that `host` (a name or an address) may be connected to on `port`.
    pub fn host(&self, host: &str, port: u16) -> Result<(), AccessError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(AccessError::NoHost(host.to_string()));
        }
        if let Ok(address) = host.parse::<IpAddr>() {
            refuse_forbidden(address)?;
        }
        if let Hosts::Only(allowed) = &self.hosts {
            let listed = allowed.iter().any(|(name, allowed_port)| {
                name.eq_ignore_ascii_case(host) && allowed_port.is_none_or(|allowed| allowed == port)
            });
            if !listed {
                return Err(AccessError::HostNotAllowed(format!("{host}:{port}")));
            }
        }
        if host.parse::<IpAddr>().is_err() {
            // A name may lead to a forbidden address: look where it leads now.
            if let Ok(addresses) = (host, port).to_socket_addrs() {
                for address in addresses {
                    refuse_forbidden(address.ip())?;
                }
            }
        }
        Ok(())
    }
}

/// Refuses link-local, multicast and unspecified addresses.
fn refuse_forbidden(address: IpAddr) -> Result<(), AccessError> {
    let forbidden = match address {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_multicast() || v4.is_unspecified() || v4.is_broadcast(),
        IpAddr::V6(v6) => {
            v6.is_multicast()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| refuse_forbidden(IpAddr::V4(v4)).is_err())
        }
    };
    if forbidden {
        return Err(AccessError::ForbiddenAddress(address.to_string()));
    }
    Ok(())
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(text: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host.to_string(), Some(port.parse().ok()?))),
        Some(_) => Some((text.to_string(), None)),
        None if text.is_empty() => None,
        None => Some((text.to_string(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_stay_under_the_root() {
        let root = std::env::temp_dir().join(format!("weft-access-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::write(root.join("data/in.csv"), "a\n1\n").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("data/out")).unwrap();
        let access = Access::confined(Some(&root), &[]).unwrap();
        let canonical = root.canonicalize().unwrap();
        assert_eq!(access.file("data/in.csv").unwrap(), canonical.join("data/in.csv"));
        assert_eq!(access.file("data/new/out.jsonl").unwrap(), canonical.join("data/new/out.jsonl"));
        let inside = canonical.join("data/in.csv");
        assert_eq!(access.file(inside.to_str().unwrap()).unwrap(), inside);
        for path in ["../secret", "data/../../secret", "/etc/passwd", "data/out/passwd", "data/out/new"] {
            assert!(matches!(access.file(path), Err(AccessError::OutsideRoot { .. })), "{path}");
        }
        assert!(matches!(Access::confined(None, &[]).unwrap().file("x"), Err(AccessError::NoFiles(_))));
        assert_eq!(Access::unrestricted().file("/etc/passwd").unwrap(), PathBuf::from("/etc/passwd"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn hosts_must_be_listed_and_forbidden_addresses_are_never_reached() {
        let access = Access::confined(None, &["api.example:443,127.0.0.1".into(), "[::1]:8080".into()]).unwrap();
        assert!(access.url("https://api.example/v1").is_ok());
        assert!(access.url("http://api.example/v1").is_err(), "port 80 is not listed");
        assert!(access.url("http://127.0.0.1:9/x").is_ok(), "any port of a host listed without one");
        assert!(access.url("http://[::1]:8080/").is_ok());
        assert!(access.url("http://localhost:8080/").is_err(), "loopback only as listed");
        assert!(access.url("http://user@other.example/").is_err());
        for forbidden in ["http://169.254.169.254/latest", "http://0.0.0.0/", "http://224.0.0.1/", "http://[fe80::1]/"]
        {
            assert!(
                matches!(Access::unrestricted().url(forbidden), Err(AccessError::ForbiddenAddress(_))),
                "{forbidden}"
            );
        }
        assert!(Access::unrestricted().url("https://example.org/").is_ok());
        assert!(Access::confined(None, &[]).unwrap().url("https://example.org/").is_err());
        assert!(Access::unrestricted().url("not a url").is_err());
    }
}
