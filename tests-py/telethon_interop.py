#!/usr/bin/env python3
"""Telethon (unmodified) through an MTProto proxy: req_pq_multi -> resPQ.

Uses Telethon's own MTProxy connection classes and its plain (pre-auth-key)
sender, i.e. the exact bytes Telethon's authenticator sends first:

  --conn abridged      ConnectionTcpMTProxyAbridged       (classic secret, tag ef)
  --conn intermediate  ConnectionTcpMTProxyIntermediate   (classic secret, tag ee)
  --conn randomized    ConnectionTcpMTProxyRandomizedIntermediate (dd secret, tag dd)

The DC address given to Telethon is irrelevant (the proxy picks the DC from
the index in the init; tests point it at a local TestDc via dc_overrides).
"""
import asyncio
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import base_parser, emit, int128_le, u64_hex  # noqa: E402


async def run(args):
    import telethon
    from telethon.network.connection import (
        ConnectionTcpMTProxyAbridged,
        ConnectionTcpMTProxyIntermediate,
        ConnectionTcpMTProxyRandomizedIntermediate,
    )
    from telethon.network.mtprotoplainsender import MTProtoPlainSender
    from telethon.tl.functions import ReqPqMultiRequest
    from telethon.tl.types import ResPQ

    classes = {
        "abridged": ConnectionTcpMTProxyAbridged,
        "intermediate": ConnectionTcpMTProxyIntermediate,
        "randomized": ConnectionTcpMTProxyRandomizedIntermediate,
    }
    result = {"library": "telethon", "version": telethon.__version__, "conn": args.conn,
              "ok": False}
    # Telethon's connections take a dict-like of loggers keyed by module name.
    loggers = {}

    class _Loggers(dict):
        def __missing__(self, key):
            return logging.getLogger(key)

    loggers = _Loggers()
    # Telethon's classes want the secret as text (hex, dd-prefixed for randomized).
    conn = classes[args.conn]("149.154.167.51", 443, args.dc, loggers=loggers,
                              proxy=(args.host, args.port, args.secret))
    try:
        await conn.connect(timeout=args.timeout)
        sender = MTProtoPlainSender(conn, loggers=loggers)
        nonce = int.from_bytes(os.urandom(16), "big", signed=True)
        result["nonce"] = int128_le(nonce)
        res = await sender.send(ReqPqMultiRequest(nonce))
        if not isinstance(res, ResPQ):
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
        await conn.disconnect()


def main():
    p = base_parser(__doc__)
    p.add_argument("--conn", choices=["abridged", "intermediate", "randomized"],
                   default="abridged")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        result = asyncio.run(asyncio.wait_for(run(args), args.timeout))
    except Exception as e:  # report every failure as a result line
        result = {"library": "telethon", "conn": args.conn, "ok": False,
                  "error": "%s: %s" % (type(e).__name__, e)}
    emit(result)


if __name__ == "__main__":
    main()
