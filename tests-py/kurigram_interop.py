#!/usr/bin/env python3
"""Kurigram (the maintained Pyrogram fork, unmodified) through an MTProto proxy.

Uses Kurigram's own `Connection` with an MTProxy built from a tg://proxy link,
so the library picks the transport from the secret exactly as in an app:
classic secret -> abridged; dd -> padded intermediate; ee -> its fake-TLS
ClientHello (~1.8 KB), then padded intermediate inside TLS records. Sends the
`req_pq_multi` its authenticator sends first (packed by `Auth.pack`) and
decodes the answer with `Auth.unpack`.
"""
import asyncio
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import base_parser, emit, int128_le, u64_hex  # noqa: E402


async def run(args):
    import pyrogram
    from pyrogram import raw
    from pyrogram.connection import Connection
    from pyrogram.connection.proxy import normalize_proxy
    from pyrogram.session.auth import Auth

    link = "tg://proxy?server=%s&port=%d&secret=%s" % (args.host, args.port, args.secret)
    proxy = normalize_proxy(link)
    result = {"library": "kurigram", "version": pyrogram.__version__, "ok": False,
              "fake_tls": getattr(proxy, "sni_hostname", None) is not None}
    conn = Connection(dc_id=args.dc, server_address="149.154.167.51", port=443,
                      test_mode=False, proxy=proxy)
    result["transport"] = conn.protocol_factory.__name__
    await conn.connect()
    try:
        nonce = int.from_bytes(os.urandom(16), "little", signed=True)
        result["nonce"] = int128_le(nonce)
        await conn.send(Auth.pack(raw.functions.ReqPqMulti(nonce=nonce), server_time=time.time()))
        answer = await conn.recv()
        if answer is None:
            result["error"] = "connection closed before resPQ"
            return result
        import io
        res = Auth.unpack(io.BytesIO(answer))
        if not isinstance(res, raw.types.ResPQ):
            result["error"] = "answer was %r" % (res,)
            return result
        result.update({
            "server_nonce": int128_le(res.server_nonce),
            "pq": res.pq.hex(),
            "fingerprints": [u64_hex(f) for f in res.server_public_key_fingerprints],
            "nonce_echoed": res.nonce == nonce,
        })
        result["ok"] = res.nonce == nonce
        return result
    finally:
        await conn.close()


def main():
    args = base_parser(__doc__).parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        result = asyncio.run(asyncio.wait_for(run(args), args.timeout))
    except Exception as e:  # report every failure as a result line
        result = {"library": "kurigram", "ok": False, "error": "%s: %s" % (type(e).__name__, e)}
    emit(result)


if __name__ == "__main__":
    main()
