"""Shared helpers for the interop scripts: argument parsing and the result line.

Every script prints exactly one line ``INTEROP {json}`` on stdout (parsed by
``testkit::py::run_interop``) and exits 0 when ``ok`` is true, 1 otherwise.
"""
import argparse
import json
import sys

RESULT_PREFIX = "INTEROP "


def base_parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="127.0.0.1", help="proxy address (loopback only)")
    p.add_argument("--port", type=int, required=True, help="proxy port")
    p.add_argument("--secret", required=True,
                   help="secret as in a link: 32 hex, dd+32 hex, or ee+32 hex+hex(domain)")
    p.add_argument("--dc", type=int, default=2, help="DC index to ask the proxy for")
    p.add_argument("--timeout", type=float, default=20.0, help="overall deadline, seconds")
    return p


def int128_le(value):
    """TL int128 as it travels on the wire (16 bytes, little endian, signed)."""
    return value.to_bytes(16, "little", signed=True).hex()


def u64_hex(value):
    return "%016x" % (value & 0xFFFFFFFFFFFFFFFF)


def emit(result):
    print(RESULT_PREFIX + json.dumps(result, sort_keys=True), flush=True)
    sys.exit(0 if result.get("ok") else 1)
