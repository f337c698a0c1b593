//! Zero-run coding of a XOR delta (codec id 3 payload and the HDE `XorDelta` block payload).
//!
//! Format (n, the decoded length, is known to both sides from the context and is not stored):
//! a sequence of tokens `zero_len: varint, literal_len: varint, literal bytes`, repeated until
//! the tokens cover exactly n bytes. A zero run is `zero_len` bytes of delta 0 (the receiver
//! copies its baseline there); a literal is `literal_len` bytes of delta (the receiver XORs them
//! onto its baseline). n = 0 encodes to nothing. A token `(0, 0)` is invalid.
//!
//! The encoder output is canonical: maximal runs of zero delta bytes are found at byte
//! granularity; a zero run shorter than [`MIN_ZERO_RUN`] that has a literal before it is folded
//! into that literal (it is cheaper than the two varints a split costs); a leading zero run of
//! any length is kept. Every kernel set therefore produces identical bytes, which the property
//! tests check against a byte-at-a-time reference.
//!
//! This module owns the run detection on top of the 32-byte zero masks that the kernels
//! compute, the coalescing rule, and the decoder. It does not choose whether a delta is worth
//! sending (that is the HDE encoder's job; see the `limit` argument).

use thiserror::Error;

use crate::Kernels;
use crate::varint::{self, VarintError};

/// A zero run shorter than this that follows a literal is folded into the literal.
pub const MIN_ZERO_RUN: usize = 8;

/// Chunks of 32 bytes whose masks are computed per kernel call.
const MASK_BATCH: usize = 64;

/// The encoded form would be longer than the caller's limit; nothing was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("zero-run encoding exceeds the limit of {limit} bytes")]
pub struct LimitExceeded {
    /// The limit given to the encoder.
    pub limit: usize,
}

/// Why a zero-run payload could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ZrunError {
    /// A length varint is malformed.
    #[error("bad length varint in zero-run payload")]
    Varint(#[from] VarintError),
    /// A run claims more bytes than remain in the decoded output.
    #[error("run of {len} bytes at payload byte {at} exceeds the {remaining} bytes left to decode")]
    RunTooLong {
        /// Payload offset of the length varint.
        at: usize,
        /// The claimed run length.
        len: u64,
        /// Bytes of output still undecoded.
        remaining: usize,
    },
    /// A literal's bytes are not all in the payload.
    #[error("literal of {len} bytes at payload byte {at} is truncated ({available} available)")]
    LiteralTruncated {
        /// Payload offset of the literal bytes.
        at: usize,
        /// The claimed literal length.
        len: usize,
        /// Payload bytes left.
        available: usize,
    },
    /// A `(0, 0)` token, which makes no progress.
    #[error("empty token at payload byte {at}")]
    EmptyToken {
        /// Payload offset of the token.
        at: usize,
    },
    /// The baseline and output lengths differ.
    #[error("baseline is {base} bytes but the output is {out} bytes")]
    LengthMismatch {
        /// Baseline length.
        base: usize,
        /// Output length.
        out: usize,
    },
}

/// Where literal bytes come from: the delta itself, or `a ^ b` computed on the fly.
#[derive(Clone, Copy)]
enum Src<'a> {
    Delta(&'a [u8]),
    Xor(&'a [u8], &'a [u8]),
}

impl Src<'_> {
    fn len(&self) -> usize {
        match self {
            Src::Delta(d) => d.len(),
            Src::Xor(a, _) => a.len(),
        }
    }
}

struct Sink<'o, 's> {
    k: &'s Kernels,
    out: &'o mut Vec<u8>,
    start: usize,
    limit: usize,
    src: Src<'s>,
}

impl Sink<'_, '_> {
    fn token(&mut self, z: usize, lit: (usize, usize)) -> Result<(), LimitExceeded> {
        let l = lit.1 - lit.0;
        let need = varint::encoded_len(z as u64) + varint::encoded_len(l as u64) + l;
        if self.out.len() - self.start + need > self.limit {
            return Err(LimitExceeded { limit: self.limit });
        }
        varint::put(self.out, z as u64);
        varint::put(self.out, l as u64);
        let at = self.out.len();
        match self.src {
            Src::Delta(d) => self.out.extend_from_slice(&d[lit.0..lit.1]),
            Src::Xor(a, b) => {
                self.out.resize(at + l, 0);
                (self.k.xor_into)(&mut self.out[at..], &a[lit.0..lit.1], &b[lit.0..lit.1]);
            }
        }
        Ok(())
    }
}

/// The coalescing rule, fed with maximal runs in order (kinds alternate).
#[derive(Default)]
struct Coalescer {
    z: usize,
    lit: Option<(usize, usize)>,
}

impl Coalescer {
    fn zero_run(&mut self, s: usize, e: usize, sink: &mut Sink) -> Result<(), LimitExceeded> {
        match &mut self.lit {
            None => self.z += e - s,
            Some(lit) if e - s < MIN_ZERO_RUN => lit.1 = e,
            Some(lit) => {
                let lit = *lit;
                sink.token(self.z, lit)?;
                self.z = e - s;
                self.lit = None;
            }
        }
        Ok(())
    }

    fn lit_run(&mut self, s: usize, e: usize, sink: &Sink) -> Result<(), LimitExceeded> {
        let lit = match &mut self.lit {
            None => self.lit.insert((s, e)),
            Some(lit) => {
                lit.1 = e;
                lit
            }
        };
        // Give up as soon as the pending literal alone cannot fit (dense deltas stop early).
        if sink.out.len() - sink.start + (lit.1 - lit.0) > sink.limit {
            return Err(LimitExceeded { limit: sink.limit });
        }
        Ok(())
    }

    fn finish(self, sink: &mut Sink) -> Result<(), LimitExceeded> {
        match self.lit {
            Some(lit) => sink.token(self.z, lit),
            None if self.z > 0 => sink.token(self.z, (0, 0)),
            None => Ok(()),
        }
    }
}

/// Mask-driven encoder used by every kernel set.
fn encode(k: &Kernels, src: Src, out: &mut Vec<u8>, limit: usize) -> Result<usize, LimitExceeded> {
    let n = src.len();
    let start = out.len();
    let mut sink = Sink {
        k,
        out,
        start,
        limit,
        src,
    };
    let mut co = Coalescer::default();
    let mut run_zero = true;
    let mut run_start = 0usize;
    let mut masks = [0u32; MASK_BATCH];
    let mut base = 0usize;
    let res = (|| {
        while base < n {
            let end = n.min(base + MASK_BATCH * 32);
            let cnt = (end - base).div_ceil(32);
            // An unchanged stretch inside a zero run costs one equality test per batch.
            if run_zero {
                let same = match src {
                    Src::Delta(d) => (k.is_zero)(&d[base..end]),
                    Src::Xor(a, b) => (k.equal)(&a[base..end], &b[base..end]),
                };
                if same {
                    base = end;
                    continue;
                }
            }
            match src {
                Src::Delta(d) => (k.zero_masks)(&d[base..end], &mut masks[..cnt]),
                Src::Xor(a, b) => {
                    (k.xor_zero_masks)(&a[base..end], &b[base..end], &mut masks[..cnt])
                }
            }
            let full = (end - base) / 32; // chunks of 32 valid bytes; at most one partial after
            let mut j = 0usize;
            while j < cnt {
                // Skip chunks that continue the current run (the common case).
                let skip = if run_zero { u32::MAX } else { 0 };
                while j < full && masks[j] == skip {
                    j += 1;
                }
                if j == cnt {
                    break;
                }
                let cs = base + j * 32;
                let w = (n - cs).min(32);
                let valid = if w == 32 { u32::MAX } else { (1u32 << w) - 1 };
                let m = masks[j] & valid;
                j += 1;
                if (run_zero && m == valid) || (!run_zero && m == 0) {
                    continue;
                }
                let mut p = 0usize;
                while p < w {
                    let rest = m >> p;
                    let same = if run_zero {
                        (!rest).trailing_zeros()
                    } else {
                        rest.trailing_zeros()
                    };
                    p += (same as usize).min(w - p);
                    if p < w {
                        let pos = cs + p;
                        if run_zero {
                            co.zero_run(run_start, pos, &mut sink)?;
                        } else {
                            co.lit_run(run_start, pos, &sink)?;
                        }
                        run_zero = !run_zero;
                        run_start = pos;
                    }
                }
            }
            base = end;
        }
        if run_zero {
            co.zero_run(run_start, n, &mut sink)?;
        } else {
            co.lit_run(run_start, n, &sink)?;
        }
        std::mem::take(&mut co).finish(&mut sink)
    })();
    match res {
        Ok(()) => Ok(sink.out.len() - start),
        Err(e) => {
            sink.out.truncate(start);
            Err(e)
        }
    }
}

pub(crate) fn encode_xor(
    k: &Kernels,
    new: &[u8],
    base: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<usize, LimitExceeded> {
    assert_eq!(
        new.len(),
        base.len(),
        "xor_zrun_encode: new and base lengths differ"
    );
    encode(k, Src::Xor(new, base), out, limit)
}

pub(crate) fn encode_delta(
    k: &Kernels,
    delta: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<usize, LimitExceeded> {
    encode(k, Src::Delta(delta), out, limit)
}

/// Byte-at-a-time reference of the canonical encoding of `delta` (no limit). Slow; for tests.
pub fn reference_encode(delta: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let k = Kernels::scalar();
    let mut sink = Sink {
        k: &k,
        out: &mut out,
        start: 0,
        limit: usize::MAX,
        src: Src::Delta(delta),
    };
    let mut co = Coalescer::default();
    let mut i = 0;
    let n = delta.len();
    // A possibly empty leading zero run, then alternating maximal runs.
    let mut zero = true;
    while i < n || zero {
        let s = i;
        while i < n && (delta[i] == 0) == zero {
            i += 1;
        }
        if zero {
            co.zero_run(s, i, &mut sink).expect("no limit");
        } else {
            co.lit_run(s, i, &sink).expect("no limit");
        }
        zero = !zero;
        if i == n {
            break;
        }
    }
    co.finish(&mut sink).expect("no limit");
    out
}

/// Decodes `enc` into `out`. With `base`, zero runs copy the baseline and literals are XORed
/// onto it (reconstructing the new version); without, zero runs are zero-filled and literals
/// copied (reconstructing the delta). Returns the number of payload bytes consumed.
pub(crate) fn decode(
    k: &Kernels,
    enc: &[u8],
    base: Option<&[u8]>,
    out: &mut [u8],
) -> Result<usize, ZrunError> {
    let n = out.len();
    if let Some(b) = base
        && b.len() != n
    {
        return Err(ZrunError::LengthMismatch {
            base: b.len(),
            out: n,
        });
    }
    let mut pos = 0usize; // in enc
    let mut o = 0usize; // in out
    while o < n {
        let at = pos;
        let z = varint::get(enc, &mut pos)?;
        if z > (n - o) as u64 {
            return Err(ZrunError::RunTooLong {
                at,
                len: z,
                remaining: n - o,
            });
        }
        let z = z as usize;
        match base {
            Some(b) => out[o..o + z].copy_from_slice(&b[o..o + z]),
            None => out[o..o + z].fill(0),
        }
        o += z;
        let lat = pos;
        let l = varint::get(enc, &mut pos)?;
        if l > (n - o) as u64 {
            return Err(ZrunError::RunTooLong {
                at: lat,
                len: l,
                remaining: n - o,
            });
        }
        let l = l as usize;
        if z == 0 && l == 0 {
            return Err(ZrunError::EmptyToken { at });
        }
        let available = enc.len() - pos;
        if l > available {
            return Err(ZrunError::LiteralTruncated {
                at: pos,
                len: l,
                available,
            });
        }
        let lit = &enc[pos..pos + l];
        match base {
            Some(b) => (k.xor_into)(&mut out[o..o + l], &b[o..o + l], lit),
            None => out[o..o + l].copy_from_slice(lit),
        }
        pos += l;
        o += l;
    }
    Ok(pos)
}
