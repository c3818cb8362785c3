//! The node's identity: an ed25519 key generated into the data directory on first start, named
//! by its `did:key`, which signs every receipt this node issues.

use cid::multibase::{self, Base};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use std::io::{Read, Write};
use std::path::Path;

/// Multicodec prefix of an ed25519 public key (0xed, as an unsigned varint).
const ED25519_PUBLIC_KEY_PREFIX: [u8; 2] = [0xed, 0x01];

/// Errors of key handling and signatures.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The node's key file could not be read, written or parsed.
    #[error("node key {path}: {message}")]
    Key {
        /// The key file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A did that is not an Ed25519 did:key.
    #[error("{0} is not an ed25519 did:key")]
    NotDidKey(String),
    /// A signature that the key does not verify.
    #[error("signature does not verify: {0}")]
    BadSignature(String),
}

/// This node's signing key.
pub struct Identity {
    key: SigningKey,
    did: String,
}

impl Identity {
    /// Loads `path`, or creates it with a fresh key from the operating system's randomness.
    pub fn load_or_create(path: &Path) -> Result<Identity, IdentityError> {
        let error = |message: String| IdentityError::Key { path: path.display().to_string(), message };
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let secret: [u8; 32] = if path.exists() {
            // A key others can read is no longer the node's alone: refuse it rather than sign
            // with it.
            let mode = std::fs::metadata(path).map_err(|e| error(e.to_string()))?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(error(format!(
                    "the node key is readable by others (mode {:o}); `chmod 600 {}` if it is still secret",
                    mode & 0o777,
                    path.display()
                )));
            }
            std::fs::read(path)
                .map_err(|e| error(e.to_string()))?
                .try_into()
                .map_err(|_| error("expected 32 bytes".into()))?
        } else {
            let mut secret = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut random| random.read_exact(&mut secret))
                .map_err(|e| error(format!("reading /dev/urandom: {e}")))?;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .and_then(|mut file| file.write_all(&secret).and_then(|()| file.sync_all()))
                .map_err(|e| error(e.to_string()))?;
            secret
        };
        let key = SigningKey::from_bytes(&secret);
        let did = did_key(&key.verifying_key());
        Ok(Identity { key, did })
    }

    /// The node's `did:key:z6Mk...`.
    pub fn did(&self) -> &str {
        &self.did
    }

    /// Signs `message` (a receipt's CID bytes).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key.sign(message).to_bytes().to_vec()
    }
}

/// Sibling hashes from a leaf up to the root; `true` where the sibling is on the left.
pub type MerklePath = Vec<(bool, [u8; 32])>;

/// A receipt's signature: the node signs the Merkle root of all receipt CIDs it issued in one
/// statement (one signature per batch, not per call); each receipt keeps its inclusion path.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Proof {
    /// The Merkle root the signature covers.
    pub root: [u8; 32],
    /// Sibling hashes from the leaf up; `true` where the sibling is on the left.
    pub path: MerklePath,
    /// ed25519 signature over `root`.
    pub signature: Vec<u8>,
}

fn leaf_hash(leaf: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update([0u8]);
    hasher.update(leaf);
    hasher.finalize().into()
}

fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// One signature over the Merkle root of a batch of receipt CIDs, with the leaf hashes, so the
/// proof of any leaf can be rebuilt: a receipt in memory keeps a reference into its batch
/// (16 bytes) instead of its own inclusion path (about 600 bytes for 200k receipts).
#[derive(Debug)]
pub struct SignedBatch {
    root: [u8; 32],
    signature: Vec<u8>,
    leaves: Vec<[u8; 32]>,
}

impl SignedBatch {
    /// The batch of `leaves` (receipt CID bytes, in order) signed with `signature` (as read from
    /// the log: the root is computed again, the signature is checked by whoever verifies a proof).
    pub fn from_signature(leaves: &[Vec<u8>], signature: Vec<u8>) -> SignedBatch {
        let leaves: Vec<[u8; 32]> = leaves.iter().map(|leaf| leaf_hash(leaf)).collect();
        let (root, _) = merkle(&leaves, None);
        SignedBatch { root, signature, leaves }
    }

    /// The signature over the root.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The proof of leaf `index` (one pass over the tree, keeping one path).
    pub fn proof(&self, index: usize) -> Proof {
        let path = merkle(&self.leaves, Some(index)).1;
        Proof { root: self.root, path, signature: self.signature.clone() }
    }
}

/// The Merkle root of `leaves` (leaf hashes) and the sibling path of the `tracked` leaf, if any,
/// in one pass over the tree.
fn merkle(leaves: &[[u8; 32]], tracked: Option<usize>) -> ([u8; 32], MerklePath) {
    // A path has at most one sibling per level: allocate exactly that.
    let depth = usize::BITS as usize - leaves.len().saturating_sub(1).leading_zeros() as usize;
    let mut path: MerklePath = Vec::with_capacity(if tracked.is_some() { depth } else { 0 });
    // Where the tracked leaf's ancestor sits in the current level.
    let mut position = tracked;
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        if let Some(at) = position.as_mut() {
            let sibling = *at ^ 1;
            if sibling < level.len() {
                path.push((sibling < *at, level[sibling]));
            }
            *at /= 2;
        }
        level =
            level.chunks(2).map(|pair| if pair.len() == 2 { node_hash(&pair[0], &pair[1]) } else { pair[0] }).collect();
    }
    (level[0], path)
}

impl Identity {
    /// Signs a batch of leaves (receipt CID bytes) with one signature over their Merkle root;
    /// each leaf's proof is built from the batch when asked for. `None` for no leaves.
    pub fn sign_tree(&self, leaves: &[Vec<u8>]) -> Option<std::sync::Arc<SignedBatch>> {
        if leaves.is_empty() {
            return None;
        }
        let hashes: Vec<[u8; 32]> = leaves.iter().map(|leaf| leaf_hash(leaf)).collect();
        let (root, _) = merkle(&hashes, None);
        Some(std::sync::Arc::new(SignedBatch { root, signature: self.sign(&root), leaves: hashes }))
    }
}

/// Checks that `leaf` is under a root signed by the key `did` names.
pub fn verify_proof(did: &str, leaf: &[u8], proof: &Proof) -> Result<(), IdentityError> {
    let mut hash = leaf_hash(leaf);
    for (sibling_is_left, sibling) in &proof.path {
        hash = if *sibling_is_left { node_hash(sibling, &hash) } else { node_hash(&hash, sibling) };
    }
    if hash != proof.root {
        return Err(IdentityError::BadSignature("the receipt is not under the signed root".into()));
    }
    verify(did, &proof.root, &proof.signature)
}

/// The `did:key` of an ed25519 public key.
pub fn did_key(key: &VerifyingKey) -> String {
    let mut bytes = ED25519_PUBLIC_KEY_PREFIX.to_vec();
    bytes.extend_from_slice(key.as_bytes());
    format!("did:key:{}", multibase::encode(Base::Base58Btc, bytes))
}

/// Checks that `signature` over `message` was made by the key `did` names.
pub fn verify(did: &str, message: &[u8], signature: &[u8]) -> Result<(), IdentityError> {
    let not_did = || IdentityError::NotDidKey(did.to_string());
    let encoded = did.strip_prefix("did:key:").ok_or_else(not_did)?;
    let (_, bytes) = multibase::decode(encoded).map_err(|_| not_did())?;
    let key_bytes: [u8; 32] =
        bytes.strip_prefix(&ED25519_PUBLIC_KEY_PREFIX[..]).and_then(|key| key.try_into().ok()).ok_or_else(not_did)?;
    let key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| not_did())?;
    let signature = Signature::from_slice(signature).map_err(|error| IdentityError::BadSignature(error.to_string()))?;
    key.verify(message, &signature).map_err(|error| IdentityError::BadSignature(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_persist_and_signatures_verify() {
        let directory = std::env::temp_dir().join(format!("weft-identity-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("node.key");
        let _ = std::fs::remove_file(&path);
        let first = Identity::load_or_create(&path).unwrap();
        let again = Identity::load_or_create(&path).unwrap();
        assert_eq!(first.did(), again.did());
        // The key is the owner's alone: created 0600, refused once others can read it.
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = Identity::load_or_create(&path).err().expect("a world-readable key is refused").to_string();
        assert!(refused.contains("readable by others"), "{refused}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(first.did().starts_with("did:key:z6Mk"), "{}", first.did());
        let signature = first.sign(b"receipt");
        verify(first.did(), b"receipt", &signature).unwrap();
        assert!(verify(first.did(), b"other", &signature).is_err());
        assert!(verify("did:web:example", b"receipt", &signature).is_err());
        for size in [1usize, 2, 5, 7, 8, 33] {
            let leaves: Vec<Vec<u8>> = (0..size).map(|leaf| (leaf as u32).to_le_bytes().to_vec()).collect();
            let batch = first.sign_tree(&leaves).unwrap();
            for (index, leaf) in leaves.iter().enumerate() {
                let proof = batch.proof(index);
                verify_proof(first.did(), leaf, &proof).unwrap();
                assert_eq!(proof.signature, batch.signature(), "one signature per batch");
                if size > 1 {
                    let other = &leaves[(index + 1) % size];
                    assert!(verify_proof(first.did(), other, &proof).is_err(), "a proof is for its own leaf");
                }
            }
        }
        assert!(first.sign_tree(&[]).is_none());
        // A batch signed without proofs, and the same batch read back from its signature.
        let leaves: Vec<Vec<u8>> = (0..9u8).map(|leaf| vec![leaf; 36]).collect();
        let signed = first.sign_tree(&leaves).unwrap();
        let read = SignedBatch::from_signature(&leaves, signed.signature().to_vec());
        for (index, leaf) in leaves.iter().enumerate() {
            assert_eq!(read.proof(index), signed.proof(index));
            verify_proof(first.did(), leaf, &read.proof(index)).unwrap();
        }
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
