#!/usr/bin/env python3
"""Writes serial-v1.json: test vectors for protocol/SPEC.md, computed here from the text of the
spec, independently of the Rust codec (which the Rust tests check against this file).

    python3 protocol/vectors/gen.py > protocol/vectors/serial-v1.json
"""
import json
import struct


def crc16_ibm_3740(data: bytes) -> int:
    crc = 0xFFFF
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def cobs(data: bytes) -> bytes:
    out, block = bytearray(), bytearray()
    for b in data:
        if b == 0:
            out += bytes([len(block) + 1]) + block
            block = bytearray()
        else:
            block.append(b)
            if len(block) == 254:
                out += bytes([255]) + block
                block = bytearray()
    out += bytes([len(block) + 1]) + block
    return bytes(out)


def frame(kind: int, device: str, seq: int, body: bytes) -> str:
    raw = bytes([1, kind, len(device)]) + device.encode() + struct.pack("<I", seq) + body
    raw += struct.pack("<H", crc16_ibm_3740(raw))
    return (cobs(raw) + b"\x00").hex()


def short(b: bytes) -> bytes:
    return bytes([len(b)]) + b


name = "张*华".encode()
vectors = [
    {"name": "alarm press", "type": "alarm", "device": "btn-0003", "seq": 1, "action": 1,
     "hex": frame(0x01, "btn-0003", 1, bytes([1]))},
    {"name": "alarm cancel (long press)", "type": "alarm", "device": "btn-0003", "seq": 2, "action": 2,
     "hex": frame(0x01, "btn-0003", 2, bytes([2]))},
    {"name": "daily check-in (double press), seq with zero bytes", "type": "alarm", "device": "btn-0003", "seq": 256, "action": 3,
     "hex": frame(0x01, "btn-0003", 256, bytes([3]))},
    {"name": "heartbeat 2950 mV 81%", "type": "heartbeat", "device": "btn-0004", "seq": 7, "battery_mv": 2950, "battery_pct": 81,
     "hex": frame(0x02, "btn-0004", 7, struct.pack("<HB", 2950, 81))},
    {"name": "card tap, 4-byte UID, no MAC", "type": "card_tap", "device": "rdr-01", "seq": 42, "uid": "1ddccf2d", "mac": "",
     "hex": frame(0x03, "rdr-01", 42, short(bytes.fromhex("1ddccf2d")) + short(b""))},
    {"name": "card tap, 7-byte UID, 4-byte MAC", "type": "card_tap", "device": "rdr-03", "seq": 43, "uid": "04a1b2c3d4e5f6", "mac": "deadbeef",
     "hex": frame(0x03, "rdr-03", 43, short(bytes.fromhex("04a1b2c3d4e5f6")) + short(bytes.fromhex("deadbeef")))},
    {"name": "blood pressure 135/85 mmHg", "type": "health", "device": "kiosk-01", "seq": 9, "reading": 1, "value1": 135, "value2": 85,
     "hex": frame(0x04, "kiosk-01", 9, struct.pack("<Bii", 1, 135, 85))},
    {"name": "glucose 6.1 mmol/L", "type": "health", "device": "kiosk-01", "seq": 10, "reading": 2, "value1": 61, "value2": 0,
     "hex": frame(0x04, "kiosk-01", 10, struct.pack("<Bii", 2, 61, 0))},
    {"name": "ack", "type": "ack", "device": "btn-0003", "seq": 1,
     "hex": frame(0x10, "btn-0003", 1, b"")},
    {"name": "nak: unknown device", "type": "nak", "device": "btn-9999", "seq": 5, "reason": 2,
     "hex": frame(0x11, "btn-9999", 5, bytes([2]))},
    {"name": "display: paid, 张*华, 1500 - 150 = 1350 fen, balance 8650", "type": "display", "device": "rdr-01", "seq": 42,
     "result": 0, "name_utf8": "张*华", "price": 1500, "subsidy": 150, "payable": 1350, "balance": 8650,
     "hex": frame(0x12, "rdr-01", 42, bytes([0]) + short(name) + struct.pack("<iiii", 1500, 150, 1350, 8650))},
    {"name": "display: insufficient balance", "type": "display", "device": "rdr-01", "seq": 44,
     "result": 4, "name_utf8": "张*华", "price": 1500, "subsidy": 150, "payable": 1350, "balance": 200,
     "hex": frame(0x12, "rdr-01", 44, bytes([4]) + short(name) + struct.pack("<iiii", 1500, 150, 1350, 200))},
    {"name": "card tap, 4-byte UID, no MAC, price 1580 fen entered at the counter", "type": "card_tap", "device": "rdr-02", "seq": 44, "uid": "1b935513", "mac": "", "price": 1580,
     "hex": frame(0x03, "rdr-02", 44, short(bytes.fromhex("1b935513")) + short(b"") + struct.pack("<i", 1580))},
]
print(json.dumps({"spec": "protocol/SPEC.md v1", "crc_check": {"input": "123456789", "crc": "29b1"},
                  "vectors": vectors}, ensure_ascii=False, indent=1))
