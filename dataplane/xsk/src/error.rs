//! Error type of the AF_XDP boundary. Owns the error enum only.

/// Errors from setting up or running an AF_XDP socket.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// mmap of the UMEM area failed.
    #[error("mmap of a {len}-byte UMEM area failed")]
    Mmap {
        /// Requested length in bytes.
        len: usize,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is not usable.
    #[error("invalid AF_XDP configuration: {what}")]
    Config {
        /// What is wrong.
        what: String,
    },
    /// The interface does not exist (in this network namespace).
    #[error("interface `{ifname}` not found")]
    NoInterface {
        /// Interface name.
        ifname: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// A socket step (socket, UMEM registration, ring set-up, bind) failed.
    #[error("AF_XDP {step} failed on {ifname} queue {queue}")]
    Socket {
        /// Which step.
        step: &'static str,
        /// Interface name.
        ifname: String,
        /// Queue id.
        queue: u32,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// A UDP socket system call failed.
    #[error("UDP {op} failed")]
    Udp {
        /// Which call.
        op: &'static str,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn errno_io(e: xdpilone::Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.get_raw().abs())
}
