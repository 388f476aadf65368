//! Streaming fake-TLS record de-framing for the client → proxy direction (PROTOCOL.md §4.6)
//! lives in `proto` beside the server handshake that starts it; this path keeps the data
//! plane's name for it.

pub(crate) use proto::Deframer;
