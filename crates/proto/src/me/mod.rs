//! Middle-proxy (ME) RPC layer (docs/PROTOCOL.md §7): checksums, packet framing,
//! the encrypted link stream, the handshake for both roles (proxy and middle
//! proxy), PROXY_REQ/ANS and the other RPC messages, KDF and CBC streams.
//!
//! Owns: sans-IO wire pieces only. Must not: hold the ME pool, fetch the
//! proxy config/secret, read clocks or draw randomness.
//! STUN (§7.5) lives in `proto::stun`.

pub mod config;
pub mod crc;
pub mod handshake;
pub mod kdf;
pub mod link;
pub mod msg;
pub mod rpc;

pub use config::{parse_proxy_config, ProxyConfigError, ProxyConfigFile};
pub use crc::{crc32, crc32c, Checksum};
pub use handshake::{
    pid_bytes, ClientHandshake, HandshakeError, HandshakeParams, RpcLink, ServerHandshake,
};
pub use kdf::{derive_key_iv, kdf_input_bytes, CbcStream, KdfInput, MixedFamilies, Purpose};
pub use link::{RpcReceiver, RpcSender};
pub use msg::{
    close_conn_payload, close_ext_payload, handshake_error_payload, ping_payload, pong_payload,
    proxy_ans_payload, simple_ack_payload, Handshake, ProxyMessage, ProxyMessageError, ProxyReq,
    ProxyReqError,
};
pub use rpc::{
    encode_packet, handshake_payload, pad_to_block, parse_handshake_answer, write_proxy_req_header,
    MeMessage, RpcError, RpcNonce, RpcPacket, RpcPacketDecoder, MAX_PACKET_LEN, MAX_PROXY_REQ_DATA,
    PROXY_REQ_MAX_HEADER,
};

#[cfg(test)]
mod handshake_tests;
#[cfg(test)]
mod tests;
