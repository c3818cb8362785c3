//! Password checks for both front ends: the server's one password compared in constant time
//! (SHA-256 digests, so neither the content nor the length leaks through timing), and a growing
//! delay before answering an address whose attempts keep failing.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The delay after the first failure from an address; it doubles with each further one.
const FIRST_DELAY: Duration = Duration::from_millis(100);

/// The longest delay before an answer.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// How long an address's failures are remembered without a new one.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// The most addresses whose failures are remembered; beyond it the oldest are forgotten.
const MAX_ADDRESSES: usize = 65_536;

/// The server's password and the failed attempts per client address.
pub struct PasswordCheck {
    digest: Option<[u8; 32]>,
    /// The salt and SCRAM salted password, for SCRAM-SHA-256 on pgwire.
    scram: Option<(Vec<u8>, Vec<u8>)>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl PasswordCheck {
    /// Checks against `password`; `None` lets everyone in.
    pub fn new(password: Option<&str>) -> PasswordCheck {
        let scram = password.map(|password| {
            let salt = random_salt();
            let salted = pgwire::api::auth::sasl::scram::gen_salted_password(password, &salt, SCRAM_ITERATIONS);
            (salt, salted)
        });
        PasswordCheck { digest: password.map(digest), scram, failures: Mutex::default() }
    }

    /// The salt and salted password SCRAM-SHA-256 checks clients against.
    pub fn scram_secret(&self) -> Option<&(Vec<u8>, Vec<u8>)> {
        self.scram.as_ref()
    }

    /// Whether clients must give a password.
    pub fn required(&self) -> bool {
        self.digest.is_some()
    }

    /// Whether `given` is the password (always, when none is required); counts a failure.
    /// Callers wait [`PasswordCheck::delay`] before asking.
    pub fn verify(&self, address: IpAddr, given: &[u8]) -> bool {
        let Some(expected) = &self.digest else {
            return true;
        };
        let matches: bool = digest_bytes(given).ct_eq(expected).into();
        self.record(address, matches);
        matches
    }

    /// Records an attempt from `address` checked elsewhere (SCRAM): a failure lengthens its next
    /// wait, a success forgets its failures.
    pub fn record(&self, address: IpAddr, matches: bool) {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if matches {
            failures.remove(&address);
        } else {
            if failures.len() >= MAX_ADDRESSES {
                let now = Instant::now();
                failures.retain(|_, (_, last)| now.duration_since(*last) < FORGET_AFTER);
                if failures.len() >= MAX_ADDRESSES {
                    failures.clear();
                }
            }
            let entry = failures.entry(address).or_insert((0, Instant::now()));
            *entry = (entry.0.saturating_add(1), Instant::now());
        }
    }

    /// How long to wait before checking an attempt from `address`.
    pub fn delay(&self, address: IpAddr) -> Duration {
        let failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match failures.get(&address) {
            Some((count, last)) if last.elapsed() < FORGET_AFTER && *count > 0 => {
                FIRST_DELAY.saturating_mul(1 << (count - 1).min(16)).min(MAX_DELAY)
            }
            _ => Duration::ZERO,
        }
    }
}

/// PBKDF2 iterations of the SCRAM secret (PostgreSQL's default).
pub const SCRAM_ITERATIONS: usize = 4096;

/// 16 bytes from the operating system's random source (a time-derived value if there is none).
fn random_salt() -> Vec<u8> {
    use std::io::Read;
    let mut salt = vec![0u8; 16];
    if std::fs::File::open("/dev/urandom").and_then(|mut random| random.read_exact(&mut salt)).is_err() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        salt = Sha256::digest(now.as_nanos().to_le_bytes()).to_vec();
        salt.truncate(16);
    }
    salt
}

fn digest(password: &str) -> [u8; 32] {
    digest_bytes(password.as_bytes())
}

fn digest_bytes(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_checked_and_failures_slow_an_address_down() {
        let check = PasswordCheck::new(Some("s3cret"));
        let (client, other) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        assert!(check.required());
        assert!(!check.verify(client, b"s3cre"));
        assert!(!check.verify(client, b"s3cret "));
        assert_eq!(check.delay(client), FIRST_DELAY * 2);
        assert_eq!(check.delay(other), Duration::ZERO, "only the failing address waits");
        assert!(check.verify(client, b"s3cret"));
        assert_eq!(check.delay(client), Duration::ZERO, "a success forgets the failures");
        assert!(PasswordCheck::new(None).verify(client, b"anything"));
    }
}
