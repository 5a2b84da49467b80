#!/usr/bin/env python3
"""Sign a district-gateway remote command (the city's side of PRODUCT.md "Remote operations").

Builds the command JSON, signs exactly its bytes with an Ed25519 private key (Python's `cryptography` package,
an implementation independent of the gateway's), and prints the envelope to publish on
`{topic_prefix}/{gateway_id}/cmd/req`:

    {"key_id": "ops-1", "payload": "<base64 of the command JSON>", "sig": "<base64 Ed25519 signature>"}

Usage:
    # once: make a key pair; put the printed [[ops.key]] lines into gateway.toml, keep the key file secret
    tools/sign-command.py --generate-key ops-1.key --key-id ops-1

    # sign a command (args as JSON; default {}), valid for 5 minutes from now
    tools/sign-command.py --key ops-1.key --key-id ops-1 status
    tools/sign-command.py --key ops-1.key --key-id ops-1 --gateway garstedt-01 \\
        lighting.override '{"zone": "reiherhagen", "level_pct": 100, "duration_s": 600}'

    # and publish it, e.g.
    tools/sign-command.py --key ops-1.key --key-id ops-1 ping \\
        | mosquitto_pub -h broker.city.example -t city/garstedt-01/cmd/req -q 1 -s
    # the answer arrives on city/garstedt-01/cmd/res with the same "id".

Options:
    --id ID            command id (default: a random UUID); every id is accepted once only
    --valid-for S      seconds from issued_at to expires_at (default 300; the gateway accepts at most 24 h)
    --issued-at TIME   RFC 3339 issue time (default: now, UTC)
    --gateway GW       bind the command to one gateway id (refused as wrong_gateway by every other gateway)
    --config-file F    for config.apply: read the TOML from F and send it as {"toml": "..."}

Key files: base64 of the 32-byte Ed25519 private key (seed) on one line, as written by --generate-key, or a PEM
PKCS#8 private key such as `openssl genpkey -algorithm ed25519` writes. The script never prints private key
material. Needs python3 and `cryptography` (Debian: apt install python3-cryptography).
"""

import argparse
import base64
import datetime
import json
import os
import sys
import uuid


def load_crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    except ImportError:
        print(
            "sign-command.py needs Python's cryptography package (apt install python3-cryptography, "
            "or pip install cryptography)",
            file=sys.stderr,
        )
        sys.exit(3)
    return serialization, Ed25519PrivateKey


def load_key(path):
    serialization, Ed25519PrivateKey = load_crypto()
    with open(path, "rb") as f:
        data = f.read()
    if b"-----BEGIN" in data:
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            sys.exit(f"{path}: not an Ed25519 private key")
        return key
    try:
        seed = base64.b64decode(data.strip(), validate=True)
    except ValueError:
        sys.exit(f"{path}: expected base64 of a 32-byte Ed25519 private key, or a PEM private key")
    if len(seed) != 32:
        sys.exit(f"{path}: expected a 32-byte Ed25519 private key, got {len(seed)} bytes")
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_b64(key):
    serialization, _ = load_crypto()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def rfc3339(t):
    return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s):
    t = datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
    if t.tzinfo is None:
        sys.exit("--issued-at needs a time zone, e.g. 2026-11-26T03:10:00Z")
    return t


def generate(path, key_id):
    serialization, Ed25519PrivateKey = load_crypto()
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(seed).decode() + "\n")
    print("[[ops.key]]")
    print(f'id = "{key_id}"')
    print(f'ed25519_public = "{public_b64(key)}"')


def main():
    p = argparse.ArgumentParser(
        description="Sign a district-gateway command; prints the cmd/req envelope.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument("--key", help="private key file")
    p.add_argument("--key-id", default="ops-1", help="the [[ops.key]] id the gateway knows the key by")
    p.add_argument("--generate-key", metavar="FILE", help="write a new private key to FILE and print its config")
    p.add_argument("--public-key", action="store_true", help="print the public key of --key and exit")
    p.add_argument("--id", default=None)
    p.add_argument("--valid-for", type=int, default=300)
    p.add_argument("--issued-at", default=None)
    p.add_argument("--gateway", default=None)
    p.add_argument("--config-file", default=None)
    p.add_argument("cmd", nargs="?")
    p.add_argument("args", nargs="?", default=None, help="JSON object")
    a = p.parse_args()

    if a.generate_key:
        generate(a.generate_key, a.key_id)
        return
    if not a.key:
        p.error("--key is required")
    key = load_key(a.key)
    if a.public_key:
        print(public_b64(key))
        return
    if not a.cmd:
        p.error("the command name is required")
    if a.valid_for <= 0:
        p.error("--valid-for must be positive")

    args = {}
    if a.args is not None:
        try:
            args = json.loads(a.args)
        except json.JSONDecodeError as e:
            p.error(f"args are not JSON: {e}")
        if not isinstance(args, dict):
            p.error("args must be a JSON object")
    if a.config_file:
        with open(a.config_file, encoding="utf-8") as f:
            args["toml"] = f.read()

    issued = parse_time(a.issued_at) if a.issued_at else datetime.datetime.now(datetime.timezone.utc)
    issued = issued.replace(microsecond=0)
    command = {
        "id": a.id or str(uuid.uuid4()),
        "cmd": a.cmd,
        "args": args,
        "issued_at": rfc3339(issued),
        "expires_at": rfc3339(issued + datetime.timedelta(seconds=a.valid_for)),
    }
    if a.gateway:
        command["gateway"] = a.gateway
    payload = json.dumps(command, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    sig = key.sign(payload)
    envelope = {
        "key_id": a.key_id,
        "payload": base64.b64encode(payload).decode(),
        "sig": base64.b64encode(sig).decode(),
    }
    print(json.dumps(envelope, separators=(",", ":")))


if __name__ == "__main__":
    main()
