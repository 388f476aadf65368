#!/usr/bin/env python3
"""Property-based fuzzing of the control-plane API against its own OpenAPI document.

Runs schemathesis over every operation of `GET /v1/openapi.json` on a running mtproxyd and
fails on any 5xx answer or any response that the document does not describe (status, media
type, headers, body schema). Checks that judge API design rather than conformance (whether
invalid data is refused, whether auth is enforced) are left out: they are not what the
document promises.

Usage: schema_fuzz.py --url http://127.0.0.1:PORT [--max-examples N] [--seed N]
Exit status: schemathesis's (0 when every check passed).
"""

import argparse
import subprocess
import sys

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="API base URL, e.g. http://127.0.0.1:9091")
    parser.add_argument("--max-examples", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--auth", default="", help="Authorization header value, if configured")
    args = parser.parse_args()
    base = args.url.rstrip("/")
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{base}/v1/openapi.json",
        "--url",
        base,
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(args.max_examples),
        "--seed",
        str(args.seed),
        "--request-timeout",
        "10",
        "--continue-on-failure",
        "--no-color",
    ]
    if args.auth:
        cmd += ["--header", f"Authorization: {args.auth}"]
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
