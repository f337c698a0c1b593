//! Typed errors of the shared-memory boundary. Owns no behaviour.

use std::path::PathBuf;

/// Errors from creating, opening, validating or using the shared region.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    /// An I/O call on the region file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The region file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Word 0 is not the DWCP magic.
    #[error("{path}: bad magic {found:#018x} (expected {expected:#018x})")]
    BadMagic {
        /// The region file.
        path: PathBuf,
        /// Value found.
        found: u64,
        /// Value expected.
        expected: u64,
    },
    /// The region was made by a different ABI version.
    #[error("{path}: ABI version {found}, this build speaks {expected}")]
    AbiMismatch {
        /// The region file.
        path: PathBuf,
        /// Version in the header.
        found: u64,
        /// Version of this build.
        expected: u64,
    },
    /// Stored sizes or offsets do not match what the stored geometry implies, or the file size.
    #[error("{path}: layout mismatch in {field}: header says {found}, expected {expected}")]
    LayoutMismatch {
        /// The region file.
        path: PathBuf,
        /// Field that disagrees.
        field: &'static str,
        /// Value found.
        found: u64,
        /// Value expected.
        expected: u64,
    },
    /// The caller asked for a geometry different from the one the region was created with.
    #[error("{path}: region geometry {found:?} differs from requested {requested:?}")]
    GeometryMismatch {
        /// The region file.
        path: PathBuf,
        /// Geometry in the region.
        found: crate::Geometry,
        /// Geometry requested.
        requested: crate::Geometry,
    },
    /// A geometry value outside the documented bounds.
    #[error("bad geometry: {field} = {value}")]
    BadGeometry {
        /// The field.
        field: &'static str,
        /// The value.
        value: u64,
    },
    /// The file exists but its creator never finished writing the header.
    #[error("{path}: region not initialised (creator died or is still writing)")]
    NotInitialized {
        /// The region file.
        path: PathBuf,
    },
    /// Another live process holds this side.
    #[error("{role} side already attached by live pid {pid}")]
    RoleBusy {
        /// The side.
        role: crate::Role,
        /// The holder.
        pid: u64,
    },
    /// Ring positions in the region are impossible (tail ahead of head, or more than a ring apart).
    #[error("{ring} ring corrupt: head {head}, tail {tail}, slots {slots}")]
    RingCorrupt {
        /// Which ring.
        ring: &'static str,
        /// Stored head.
        head: u64,
        /// Stored tail.
        tail: u64,
        /// Slot count.
        slots: u64,
    },
    /// The table did not hold still long enough to be read (writer died mid-write or is flooding).
    #[error("flag table stayed inconsistent for {attempts} read attempts")]
    TableBusy {
        /// Attempts made.
        attempts: u32,
    },
    /// A table entry could not be encoded.
    #[error("flag table: {reason}")]
    TableEncode {
        /// What is wrong.
        reason: String,
    },
}

/// Error decoding a ring slot into a typed message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Tag not known to this ABI version.
    #[error("unknown message tag {tag:#x}")]
    UnknownTag {
        /// The tag.
        tag: u64,
    },
    /// A field holds a value outside its enumeration.
    #[error("message tag {tag:#x}: field {field} has invalid value {value}")]
    BadField {
        /// The tag.
        tag: u64,
        /// The field.
        field: &'static str,
        /// The value.
        value: u64,
    },
    /// The slot's sequence word does not match the ring position (torn or foreign write).
    #[error("slot sequence {found} at ring position {expected}")]
    SeqMismatch {
        /// Sequence word found.
        found: u64,
        /// Ring position.
        expected: u64,
    },
}

/// The ring is full: the consumer is behind by a whole ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{ring} ring full ({slots} slots unconsumed)")]
pub struct RingFull {
    /// Which ring.
    pub ring: &'static str,
    /// Slot count.
    pub slots: u64,
}
