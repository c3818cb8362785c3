//! SHA3-256 of many messages at once: eight Keccak states side by side in AVX-512 registers.
//!
//! Signing a receipt takes two sha3-256 digests (its invocation's and its own CID), three
//! Keccak-f\[1600\] permutations in all, and one permutation costs about 240 ns on one core with
//! the `sha3` crate's portable code: more than running a small Wasm call. The receipts of a
//! signed batch are independent messages, so their digests are computed eight at a time, lane
//! `m` of each 512-bit register holding the Keccak lane of message `m` (the layout of XKCP's
//! `KeccakP-1600-times8`). Where the processor lacks AVX-512F, each message is hashed by the
//! `sha3` crate instead; a test checks both agree on messages of every length up to a few
//! blocks.

use crate::invocation::Digest;

/// Bytes absorbed per permutation by SHA3-256 (its rate).
const RATE_BYTES: usize = 136;

/// The sha3-256 digest of each message, in order.
pub fn sha3_256_many(messages: &[&[u8]]) -> Vec<Digest> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        let mut digests = Vec::with_capacity(messages.len());
        let mut blocks: [Vec<u8>; 8] = Default::default();
        for group in messages.chunks(8) {
            // SAFETY: AVX-512F is present (checked above).
            unsafe { x8::digest_group(group, &mut blocks, &mut digests) };
        }
        return digests;
    }
    messages.iter().map(|message| crate::invocation::sha3_digest(message)).collect()
}

/// Pads `message` into `blocks` (reused): the message, the SHA3 domain bits `0x06`, zeros,
/// and a final `0x80`, filling a whole number of blocks.
fn pad_into(message: &[u8], blocks: &mut Vec<u8>) {
    let length = (message.len() / RATE_BYTES + 1) * RATE_BYTES;
    blocks.clear();
    blocks.extend_from_slice(message);
    blocks.push(0x06);
    blocks.resize(length, 0);
    blocks[length - 1] |= 0x80;
}

#[cfg(target_arch = "x86_64")]
mod x8 {
    use super::{pad_into, RATE_BYTES};
    use crate::invocation::Digest;
    use std::arch::x86_64::*;

    /// Keccak's round constants.
    const ROUND_CONSTANTS: [u64; 24] = [
        0x0000000000000001,
        0x0000000000008082,
        0x800000000000808A,
        0x8000000080008000,
        0x000000000000808B,
        0x0000000080000001,
        0x8000000080008081,
        0x8000000000008009,
        0x000000000000008A,
        0x0000000000000088,
        0x0000000080008009,
        0x000000008000000A,
        0x000000008000808B,
        0x800000000000008B,
        0x8000000000008089,
        0x8000000000008003,
        0x8000000000008002,
        0x8000000000000080,
        0x000000000000800A,
        0x800000008000000A,
        0x8000000080008081,
        0x8000000000008080,
        0x0000000080000001,
        0x8000000080008008,
    ];

    /// The rotation of lane `x + 5y` (ρ).
    const ROTATIONS: [i64; 25] =
        [0, 1, 62, 28, 27, 36, 44, 6, 55, 20, 3, 10, 43, 25, 39, 41, 45, 15, 21, 8, 18, 2, 61, 56, 14];

    /// Where lane `x + 5y` moves (π): to `y + 5((2x + 3y) mod 5)`.
    const fn destinations() -> [usize; 25] {
        let mut to = [0; 25];
        let mut index = 0;
        while index < 25 {
            let (x, y) = (index % 5, index / 5);
            to[index] = y + 5 * ((2 * x + 3 * y) % 5);
            index += 1;
        }
        to
    }
    const DESTINATIONS: [usize; 25] = destinations();

    /// `a ^ b ^ c`, as a `vpternlogq` truth table.
    const XOR3: i32 = 0x96;
    /// `a ^ (!b & c)` (χ), as a `vpternlogq` truth table.
    const CHI: i32 = 0xD2;

    /// Keccak-f[1600] on eight states at once.
    #[target_feature(enable = "avx512f")]
    fn permute(state: &mut [__m512i; 25]) {
        let rotations: [__m512i; 25] = std::array::from_fn(|index| _mm512_set1_epi64(ROTATIONS[index]));
        for constant in ROUND_CONSTANTS {
            // θ: each lane takes the parity of two neighbouring columns.
            let columns: [__m512i; 5] = std::array::from_fn(|x| {
                let three = _mm512_ternarylogic_epi64::<XOR3>(state[x], state[x + 5], state[x + 10]);
                _mm512_ternarylogic_epi64::<XOR3>(three, state[x + 15], state[x + 20])
            });
            for x in 0..5 {
                let mix = _mm512_xor_si512(columns[(x + 4) % 5], _mm512_rol_epi64::<1>(columns[(x + 1) % 5]));
                for y in 0..5 {
                    state[x + 5 * y] = _mm512_xor_si512(state[x + 5 * y], mix);
                }
            }
            // ρ and π: rotate each lane and move it.
            let mut moved = [_mm512_setzero_si512(); 25];
            for index in 0..25 {
                moved[DESTINATIONS[index]] = _mm512_rolv_epi64(state[index], rotations[index]);
            }
            // χ: each row mixes with its neighbours.
            for y in 0..5 {
                for x in 0..5 {
                    state[x + 5 * y] = _mm512_ternarylogic_epi64::<CHI>(
                        moved[x + 5 * y],
                        moved[(x + 1) % 5 + 5 * y],
                        moved[(x + 2) % 5 + 5 * y],
                    );
                }
            }
            // ι.
            state[0] = _mm512_xor_si512(state[0], _mm512_set1_epi64(constant as i64));
        }
    }

    /// Hashes up to eight messages, one per lane, appending their digests to `digests`
    /// (`blocks` is scratch for their padded forms; a lane with no message has none).
    #[target_feature(enable = "avx512f")]
    pub(super) fn digest_group(messages: &[&[u8]], blocks: &mut [Vec<u8>; 8], digests: &mut Vec<Digest>) {
        blocks.iter_mut().for_each(Vec::clear);
        for (message, padded) in messages.iter().zip(blocks.iter_mut()) {
            pad_into(message, padded);
        }
        let block_counts: [usize; 8] = std::array::from_fn(|message| blocks[message].len() / RATE_BYTES);
        let most = block_counts.iter().copied().max().unwrap_or(0);
        let mut state = [_mm512_setzero_si512(); 25];
        let mut found: Vec<Digest> = vec![[0; 32]; messages.len()];
        for block in 0..most {
            for (lane, word) in state.iter_mut().take(RATE_BYTES / 8).enumerate() {
                // Word `lane` of each message's block (zero for a message already absorbed).
                let at = block * RATE_BYTES + lane * 8;
                let words: [u64; 8] = std::array::from_fn(|message| {
                    blocks[message]
                        .get(at..at + 8)
                        .map_or(0, |bytes| u64::from_le_bytes(bytes.try_into().expect("eight bytes")))
                });
                // SAFETY: `words` is 64 bytes, as an unaligned load reads.
                let loaded = unsafe { _mm512_loadu_si512(words.as_ptr().cast()) };
                *word = _mm512_xor_si512(*word, loaded);
            }
            permute(&mut state);
            // A message whose last block this was has its digest in the first four lanes.
            let mut lanes = [[0u64; 8]; 4];
            for (index, lane) in lanes.iter_mut().enumerate() {
                // SAFETY: `lane` is 64 bytes, as an unaligned store writes.
                unsafe { _mm512_storeu_si512(lane.as_mut_ptr().cast(), state[index]) };
            }
            for (message, digest) in found.iter_mut().enumerate() {
                if block_counts[message] == block + 1 {
                    for (index, lane) in lanes.iter().enumerate() {
                        digest[index * 8..index * 8 + 8].copy_from_slice(&lane[message].to_le_bytes());
                    }
                }
            }
        }
        digests.extend(found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_sha3_crate_on_every_length() {
        // Lengths around block boundaries, in groups mixing lengths (so lanes finish at different
        // blocks) and a group of fewer than eight.
        let messages: Vec<Vec<u8>> = (0..3 * RATE_BYTES + 9)
            .map(|length| (0..length).map(|byte| (byte * 31 + length * 7) as u8).collect())
            .collect();
        let borrowed: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let digests = sha3_256_many(&borrowed);
        assert_eq!(digests.len(), messages.len());
        for (message, digest) in messages.iter().zip(&digests) {
            assert_eq!(*digest, crate::invocation::sha3_digest(message), "a message of {} bytes", message.len());
        }
        // The empty message's digest, as FIPS 202 gives it.
        assert_eq!(
            sha3_256_many(&[b""])[0][..4],
            [0xa7, 0xff, 0xc6, 0xf8],
            "sha3-256 of the empty message starts a7ffc6f8"
        );
        assert!(sha3_256_many(&[]).is_empty());
    }
}
