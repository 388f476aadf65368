"""The proxy's side of one middle-proxy (ME) link, written from docs/PROTOCOL.md §7 alone
(not from the Rust code), to check a middle proxy such as testkit's TestMe independently.

Steps: clear RPC_NONCE exchange (§7.3), KDF (§7.4), encrypted RPC_HANDSHAKE asking for
CRC-32C, then one RPC_PROXY_REQ with an ad tag carrying an unencrypted req_pq_multi (§7.6), the
RPC_PROXY_ANS with the DC's resPQ, and an RPC_PING answered by RPC_PONG.

AES comes from `cryptography` when installed, else from `pyaes` (tests-py/requirements.txt).
"""
import argparse
import hashlib
import os
import socket
import struct
import sys
import time
import zlib

from _common import emit

RPC_NONCE = 0x7ACB87AA
RPC_HANDSHAKE = 0x7682EEF5
RPC_PROXY_REQ = 0x36CEF1EE
RPC_PROXY_ANS = 0x4403DA0D
RPC_PING = 0x5730A2DF
RPC_PONG = 0x8430EAA7
TL_PROXY_TAG = 0xDB1E26AE
REQ_PQ_MULTI = 0xBE7E8EF1
RES_PQ = 0x05162463


def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_C = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


class Cbc:
    """AES-256-CBC whose chain runs across calls (one per direction)."""

    def __init__(self, key, iv, encrypt):
        self.encrypt = encrypt
        try:
            from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
            c = Cipher(algorithms.AES(key), modes.CBC(iv))
            self.ctx = c.encryptor() if encrypt else c.decryptor()
            self.slow = None
        except ImportError:
            import pyaes
            self.ctx = None
            self.slow = pyaes.AESModeOfOperationCBC(key, iv=iv)

    def apply(self, data):
        assert len(data) % 16 == 0
        if self.ctx is not None:
            return self.ctx.update(data)
        f = self.slow.encrypt if self.encrypt else self.slow.decrypt
        return b"".join(f(data[i:i + 16]) for i in range(0, len(data), 16))


def packet(seq, payload, crc):
    body = struct.pack("<Ii", len(payload) + 12, seq) + payload
    return body + struct.pack("<I", crc(body))


def ip_rev(addr):
    return bytes(reversed(socket.inet_aton(addr)))


def kdf(purpose, nonce_srv, nonce_clt, clt_ts, clt, srv, secret):
    s = (nonce_srv + nonce_clt + struct.pack("<I", clt_ts) + ip_rev(srv[0])
         + struct.pack("<H", clt[1]) + purpose + ip_rev(clt[0]) + struct.pack("<H", srv[1])
         + secret + nonce_srv + nonce_clt)
    key = hashlib.md5(s[1:]).digest()[:12] + hashlib.sha1(s).digest()
    iv = hashlib.md5(s[2:]).digest()
    return key, iv


class Link:
    """One ME link: clear until `start_crypto`, then AES-256-CBC both ways."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""  # bytes ready for packet parsing
        self.pending = b""  # ciphertext short of a whole block
        self.enc = self.dec = None
        self.crc = zlib.crc32
        self.seq_out = -2
        self.seq_in = -2

    def start_crypto(self, wk, wiv, rk, riv):
        self.enc = Cbc(wk, wiv, True)
        self.dec = Cbc(rk, riv, False)
        # Whatever followed the clear nonce packet is already ciphertext.
        self.buf, rest = b"", self.buf
        self._absorb(rest)

    def _absorb(self, chunk):
        if self.dec is None:
            self.buf += chunk
            return
        self.pending += chunk
        whole = len(self.pending) - len(self.pending) % 16
        self.buf += self.dec.apply(self.pending[:whole])
        self.pending = self.pending[whole:]

    def send(self, payload):
        data = packet(self.seq_out, payload, self.crc)
        self.seq_out += 1
        if self.enc:
            data += struct.pack("<I", 4) * ((16 - len(data) % 16) % 16 // 4)
            data = self.enc.apply(data)
        self.sock.sendall(data)

    def recv(self):
        while True:
            while len(self.buf) >= 4 and struct.unpack_from("<I", self.buf)[0] == 4:
                self.buf = self.buf[4:]
            if len(self.buf) >= 4:
                n = struct.unpack_from("<I", self.buf)[0]
                if n < 12 or n > (1 << 24) or n % 4:
                    raise ValueError("bad packet length %d" % n)
                if len(self.buf) >= n:
                    pkt, self.buf = self.buf[:n], self.buf[n:]
                    if struct.unpack_from("<I", pkt, n - 4)[0] != self.crc(pkt[:-4]):
                        raise ValueError("bad checksum")
                    seq = struct.unpack_from("<i", pkt, 4)[0]
                    if seq != self.seq_in:
                        raise ValueError("seq %d, want %d" % (seq, self.seq_in))
                    self.seq_in += 1
                    return pkt[8:-4]
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("closed by the middle proxy")
            self._absorb(chunk)


def ip16(addr):
    return b"\x00" * 10 + b"\xff\xff" + socket.inet_aton(addr)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--proxy-secret", required=True, help="hex")
    p.add_argument("--ad-tag", required=True, help="32 hex")
    p.add_argument("--conn-id", type=int, default=0x1122334455667788)
    p.add_argument("--timeout", type=float, default=10.0)
    a = p.parse_args()
    secret = bytes.fromhex(a.proxy_secret)
    tag = bytes.fromhex(a.ad_tag)
    result = {"ok": False}
    try:
        sock = socket.create_connection((a.host, a.port), timeout=a.timeout)
        clt = sock.getsockname()[:2]
        srv = sock.getpeername()[:2]
        link = Link(sock)
        ts = int(time.time()) & 0xFFFFFFFF
        nonce = os.urandom(16)
        link.send(struct.pack("<I", RPC_NONCE) + secret[:4] + struct.pack("<II", 1, ts) + nonce)
        reply = link.recv()
        rtype, = struct.unpack_from("<I", reply)
        schema, their_ts = struct.unpack_from("<II", reply, 8)
        if rtype != RPC_NONCE or reply[4:8] != secret[:4] or schema != 1:
            raise ValueError("bad nonce reply")
        if abs(their_ts - ts) > 30:
            raise ValueError("clock skew")
        nonce_srv = reply[16:32]
        wk, wiv = kdf(b"CLIENT", nonce_srv, nonce, ts, clt, srv, secret)
        rk, riv = kdf(b"SERVER", nonce_srv, nonce, ts, clt, srv, secret)
        link.start_crypto(wk, wiv, rk, riv)
        our_pid = b"IPIPPRPDTIME"
        link.send(struct.pack("<II", RPC_HANDSHAKE, 0x800) + our_pid + b"\x00" * 12)
        hs = link.recv()
        htype, hflags = struct.unpack_from("<II", hs)
        if htype != RPC_HANDSHAKE:
            raise ValueError("handshake answer %08x" % htype)
        result["peer_pid_echoed"] = hs[20:32] == our_pid
        result["crc32c"] = bool(hflags & 0x800)
        if result["crc32c"]:
            link.crc = crc32c
        msg_nonce = os.urandom(16)
        body = struct.pack("<I", REQ_PQ_MULTI) + msg_nonce
        msg = struct.pack("<qqi", 0, int(time.time() * 2**32) & ~3, len(body)) + body
        flags = 0x20021000 | 0x8 | 0x2
        req = (struct.pack("<IIQ", RPC_PROXY_REQ, flags, a.conn_id)
               + ip16("198.51.100.7") + struct.pack("<I", 51234)
               + ip16("203.0.113.10") + struct.pack("<I", 443)
               + struct.pack("<II", 24, TL_PROXY_TAG) + b"\x10" + tag + b"\x00" * 3 + msg)
        link.send(req)
        ans = link.recv()
        atype, _aflags, aconn = struct.unpack_from("<IIQ", ans)
        if atype != RPC_PROXY_ANS or aconn != a.conn_id:
            raise ValueError("answer %08x for %x" % (atype, aconn))
        data = ans[16:]
        auth_key_id, _msg_id, n = struct.unpack_from("<qqi", data)
        ctor, = struct.unpack_from("<I", data, 20)
        result["res_pq"] = auth_key_id == 0 and ctor == RES_PQ and data[24:40] == msg_nonce
        link.send(struct.pack("<Iq", RPC_PING, 0x0102030405060708))
        pong = link.recv()
        result["pong"] = pong == struct.pack("<Iq", RPC_PONG, 0x0102030405060708)
        result["ok"] = result["res_pq"] and result["pong"] and result["peer_pid_echoed"]
    except Exception as e:  # the result line must always be printed
        result["error"] = "%s: %s" % (type(e).__name__, e)
    emit(result)


if __name__ == "__main__":
    sys.exit(main())
