//! Middle-proxy (ME) RPC layer (docs/PROTOCOL.md §7): checksums, packet framing,
//! handshake payloads, PROXY_REQ/ANS messages, KDF and CBC streams.
//!
//! Owns: sans-IO wire pieces only. Must not: hold the ME pool, fetch the
//! proxy config/secret or read clocks.
//! Not here yet: STUN (§7.5).

pub mod config;
pub mod crc;
pub mod kdf;
pub mod rpc;

pub use config::{parse_proxy_config, ProxyConfigError, ProxyConfigFile};
pub use crc::{crc32, crc32c, Checksum};
pub use kdf::{derive_key_iv, kdf_input_bytes, CbcStream, KdfInput, MixedFamilies, Purpose};
pub use rpc::{
    encode_packet, handshake_payload, pad_to_block, parse_handshake_answer, write_proxy_req_header,
    MeMessage, RpcError, RpcNonce, RpcPacket, RpcPacketDecoder,
};

#[cfg(test)]
mod tests;
