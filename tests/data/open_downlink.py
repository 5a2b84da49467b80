#!/usr/bin/env python3
"""Checks and opens a LoRaWAN 1.0.x data downlink with Python's `cryptography` (OpenSSL), written from
the specification (§4.3.3 encryption, §4.4 MIC), independently of the Rust `lorawan` crate.

usage: open_downlink.py PHY_HEX NWK_S_KEY_HEX APP_S_KEY_HEX [FCNT32]
prints JSON: {"mtype", "dev_addr", "fctrl", "fcnt", "f_port", "payload", "mic_ok"} (hex strings)."""
import json
import struct
import sys

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def aes_ecb(key, block):
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def main():
    phy = bytes.fromhex(sys.argv[1])
    nwk = bytes.fromhex(sys.argv[2])
    app = bytes.fromhex(sys.argv[3])
    mhdr, msg, mic = phy[0], phy[:-4], phy[-4:]
    dev_addr = struct.unpack("<I", phy[1:5])[0]
    fctrl = phy[5]
    fcnt16 = struct.unpack("<H", phy[6:8])[0]
    fcnt = int(sys.argv[4]) if len(sys.argv) > 4 else fcnt16
    fopts_len = fctrl & 0x0F
    rest = phy[8 + fopts_len:-4]
    f_port = rest[0] if rest else None
    frm = rest[1:]
    # Downlink direction: Dir = 1.
    b0 = bytes([0x49, 0, 0, 0, 0, 1]) + struct.pack("<I", dev_addr) + struct.pack("<I", fcnt) + bytes([0, len(msg)])
    c = cmac.CMAC(algorithms.AES(nwk))
    c.update(b0 + msg)
    mic_ok = c.finalize()[:4] == mic
    key = nwk if f_port == 0 else app
    out = bytearray()
    for i in range(0, len(frm), 16):
        a = bytes([1, 0, 0, 0, 0, 1]) + struct.pack("<I", dev_addr) + struct.pack("<I", fcnt) + bytes([0, i // 16 + 1])
        s = aes_ecb(key, a)
        out += bytes(x ^ y for x, y in zip(frm[i:i + 16], s))
    print(json.dumps({
        "mtype": mhdr >> 5,
        "dev_addr": "%08x" % dev_addr,
        "fctrl": fctrl,
        "fcnt": fcnt,
        "f_port": f_port,
        "payload": out.hex(),
        "mic_ok": mic_ok,
    }))


if __name__ == "__main__":
    main()
