//! Byte codecs only: incremental decoders over byte buffers, and encoders. No sockets.

pub mod frame;
pub mod peer_msg;
pub mod resp;
