//! VM image migration: pre-copy rounds of disk and memory images over DWCP.
#![forbid(unsafe_code)]
