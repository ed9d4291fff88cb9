//! Constella's shared core: everything that is true of a KUB-1063 climate controller independent of
//! how its bytes travel.
//!
//! The crate is `no_std` with `alloc` so that RS-485 bridge firmware can reuse it; it knows nothing of
//! tokio, files, sockets or JSON. The `std` feature (default) only adds `std::error::Error` impls.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![warn(missing_docs)]

extern crate alloc;

pub mod kub1063;
