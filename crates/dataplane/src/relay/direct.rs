//! Direct route relay (docs/PROTOCOL.md §6.4): client ⇄ DC over the proxy's own obfuscated2 link,
//! re-encrypting each chunk in place.
//!
//! Owns: the two copy loops of a direct session and their half-close. Must not: parse MTProto
//! framing (bytes are end to end between client and DC), allocate per chunk, or hold a lock
//! across `.await`. Client wire handling, accounting, buffers and the idle policy are the
//! shared parts in `relay`.
//!
//! ```text
//!  client ─► ClientIn ─► client_dec ─► dc_enc ─► DC         (up: one task, two futures)
//!  client ◄─ ClientOut ◄─ client_enc ◄─ dc_dec ◄─ DC        (down; both ciphers skipped in
//!                                                           fast mode: their composition is
//!                                                           the identity)
//! ```
//!
//! Both directions run as futures of the session task, joined: each waits on its own
//! readiness (client read / DC write up, DC read / client write down), so one direction
//! blocked on a full socket never stops the other from being polled.

use std::future::poll_fn;
use std::io;

use proto::{AesCtr, CipherPair};
use stats::UserStats;
use tokio::net::TcpStream;

use super::{idle_watch, Activity, ChunkBuf, ClientIn, ClientOut, Meter, RelayEnd};
use crate::io_util::{shutdown_write, write_all};
use crate::outbound::{self as out, OutboundRead, OutboundStream, OutboundWrite};
use crate::policy::{IdlePolicy, UserRuntime};
use proto::Deframer;

/// Everything one direct relay needs. Ciphers are boxed (1 KiB of key schedule each) so the
/// session future stays small.
pub(crate) struct DirectRelay<'a> {
    pub(crate) client: &'a TcpStream,
    /// Client side: `decrypt` client → proxy, `encrypt` proxy → client.
    pub(crate) client_ciphers: Box<CipherPair>,
    /// DC side: `encrypt` proxy → DC, `decrypt` DC → proxy.
    pub(crate) dc_ciphers: Box<CipherPair>,
    /// Fast mode: DC → client bytes pass unchanged (both keystreams are the same).
    pub(crate) fast: bool,
    pub(crate) deframer: Option<Deframer>,
    pub(crate) user: &'a UserRuntime,
    pub(crate) user_stats: &'a UserStats,
    pub(crate) idle: IdlePolicy,
    pub(crate) throttle: &'a crate::ratelimit::Throttle,
    /// Small records first to ee clients (`censorship.tls_record_shaping`).
    pub(crate) shaping: bool,
}

impl DirectRelay<'_> {
    /// Runs over the session's DC stream: a TCP socket is shared by reference by both
    /// directions; a tunnel (Shadowsocks) is split once, and its relay future boxed so the
    /// session future stays small.
    pub(crate) async fn run_on(self, stream: OutboundStream) -> RelayEnd {
        match stream {
            OutboundStream::Tcp(s) => self.run(&s, &s).await,
            OutboundStream::Tunnel(t) => {
                let (r, w) = tokio::io::split(t);
                Box::pin(self.run(r, w)).await
            }
        }
    }

    /// Runs until both directions close, or an error / quota / idle end.
    async fn run<R: OutboundRead, W: OutboundWrite>(self, dc_read: R, dc_write: W) -> RelayEnd {
        let activity = Activity::new();
        let DirectRelay {
            client,
            mut client_ciphers,
            mut dc_ciphers,
            fast,
            deframer,
            user,
            user_stats,
            idle,
            throttle,
            shaping,
        } = self;
        let meter = Meter {
            user,
            stats: user_stats,
            throttle,
        };
        let client_out = ClientOut::new(deframer.is_some(), shaping);
        let CipherPair {
            decrypt: client_dec,
            encrypt: client_enc,
        } = &mut *client_ciphers;
        let CipherPair {
            decrypt: dc_dec,
            encrypt: dc_enc,
        } = &mut *dc_ciphers;
        let down_ciphers = (!fast).then_some((dc_dec, client_enc));
        let up = upstream(
            client,
            dc_write,
            (client_dec, dc_enc),
            ClientIn::new(deframer),
            meter,
            &activity,
        );
        let down = downstream(dc_read, client, down_ciphers, client_out, meter, &activity);
        let both = async { tokio::try_join!(up, down) };
        tokio::select! {
            r = both => match r {
                Ok(_) => RelayEnd::Closed,
                Err(e) => e,
            },
            end = idle_watch(&activity, idle) => end,
        }
    }
}

/// Client → DC until the client's end of stream (then FIN to the DC) or an error.
async fn upstream<W: OutboundWrite>(
    client: &TcpStream,
    mut dc: W,
    (dec, enc): (&mut AesCtr, &mut AesCtr),
    mut client_in: ClientIn,
    meter: Meter<'_>,
    activity: &Activity,
) -> Result<(), RelayEnd> {
    let mut buf = ChunkBuf::upstream();
    loop {
        client.readable().await?;
        let b = buf.get();
        let n = match client.try_read(b) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            out::shutdown(&mut dc).await;
            return Ok(());
        }
        activity.touch(true);
        meter.count_from_client(n);
        let chunk = client_in.deframe(&mut b[..n])?;
        let data = &mut b[..chunk.len];
        dec.apply_in_place(data);
        enc.apply_in_place(data);
        out::write_all(&mut dc, data).await?;
        meter.check_quota()?;
        meter.pace(true, n).await;
        if chunk.closed {
            out::shutdown(&mut dc).await;
            return Ok(());
        }
        buf.grow_if_full(n);
    }
}

/// DC → client until the DC's end of stream (then FIN to the client) or an error.
async fn downstream<R: OutboundRead>(
    mut dc: R,
    client: &TcpStream,
    mut ciphers: Option<(&mut AesCtr, &mut AesCtr)>,
    mut client_out: ClientOut,
    meter: Meter<'_>,
    activity: &Activity,
) -> Result<(), RelayEnd> {
    let mut buf = client_out.buffer();
    loop {
        out::ready(&mut dc).await?;
        client_out.begin();
        let b = buf.get();
        // The read targets are rebuilt on every poll rather than kept across the await, so
        // they add nothing to the session future.
        let read = poll_fn(|cx| {
            let (mut slices, count) = client_out.read_slices(b);
            dc.poll_read_vectored(cx, &mut slices[..count])
        });
        let n = match read.await {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            shutdown_write(client);
            return Ok(());
        }
        activity.touch(false);
        if let Some((dc_dec, client_enc)) = ciphers.as_mut() {
            client_out.for_each_payload(b, n, |p| {
                dc_dec.apply_in_place(p);
                client_enc.apply_in_place(p);
            });
        }
        let wire = client_out.seal(b, n);
        write_all(client, &b[..wire]).await?;
        meter.count_to_client(wire);
        meter.check_quota()?;
        meter.pace(false, wire).await;
        buf.grow_if_full(wire);
    }
}
