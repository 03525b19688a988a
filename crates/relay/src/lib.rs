//! The RTP/RTCP relay: Palisade's media fast path (work in progress: the
//! control API in [`api`] is fixed; the relay threads are being written).

pub mod api;
pub use api::*;
