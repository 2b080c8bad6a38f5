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


def wire(raw: bytes) -> str:
    """CRC appended, COBS, delimiter: what goes on the line, as hex."""
    raw += struct.pack("<H", crc16_ibm_3740(raw))
    assert 10 <= len(raw) <= 96, "SPEC.md §3: decoded frames are 10 to 96 bytes"
    return (cobs(raw) + b"\x00").hex()


def header(kind: int, device: str, seq: int, version: int = 1, id_len=None) -> bytes:
    """SPEC.md §3 header; version and id_len can be forced to build frames that must be refused."""
    dev = device.encode()
    return bytes([version, kind, len(dev) if id_len is None else id_len]) + dev + struct.pack("<I", seq)


def frame(kind: int, device: str, seq: int, body: bytes) -> str:
    return wire(header(kind, device, seq) + body)


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
    {"name": "glucose 5.4 mmol/L, fasting (context 1)", "type": "health", "device": "kiosk-01", "seq": 11, "reading": 2, "value1": 54, "value2": 0, "context": 1,
     "hex": frame(0x04, "kiosk-01", 11, struct.pack("<BiiB", 2, 54, 0, 1))},
    {"name": "temperature 36.8 °C", "type": "health", "device": "kiosk-01", "seq": 12, "reading": 4, "value1": 368, "value2": 0,
     "hex": frame(0x04, "kiosk-01", 12, struct.pack("<Bii", 4, 368, 0))},
    {"name": "reading result: stored, 张*华", "type": "reading_result", "device": "kiosk-01", "seq": 9, "result": 0, "name_utf8": "张*华",
     "hex": frame(0x13, "kiosk-01", 9, bytes([0]) + short(name))},
    {"name": "reading result: stored, please see the staff", "type": "reading_result", "device": "kiosk-01", "seq": 10, "result": 1, "name_utf8": "张*华",
     "hex": frame(0x13, "kiosk-01", 10, bytes([1]) + short(name))},
    {"name": "reading result: stored without a resident, no name", "type": "reading_result", "device": "kiosk-01", "seq": 12, "result": 2, "name_utf8": "",
     "hex": frame(0x13, "kiosk-01", 12, bytes([2]) + short(b""))},
    {"name": "reading result: card tap opened a session", "type": "reading_result", "device": "kiosk-01", "seq": 8, "result": 3, "name_utf8": "张*华",
     "hex": frame(0x13, "kiosk-01", 8, bytes([3]) + short(name))},
    {"name": "reading result: unknown card", "type": "reading_result", "device": "kiosk-01", "seq": 7, "result": 4, "name_utf8": "",
     "hex": frame(0x13, "kiosk-01", 7, bytes([4]) + short(b""))},
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

# Edge cases of the layout: the longest id, the largest seq.
vectors += [
    {"name": "alarm press, 16-character id (the longest), seq 0xFFFFFFFF", "type": "alarm",
     "device": "btn-0123456789.A", "seq": 0xFFFFFFFF, "action": 1,
     "hex": frame(0x01, "btn-0123456789.A", 0xFFFFFFFF, bytes([1]))},
    {"name": "alarm check-in, seq 0", "type": "alarm", "device": "b", "seq": 0, "action": 3,
     "hex": frame(0x01, "b", 0, bytes([3]))},
    {"name": "card tap, 10-byte UID, 8-byte MAC, price 0", "type": "card_tap", "device": "rdr_03.x", "seq": 0xFFFFFFFF,
     "uid": "0102030405060708090a", "mac": "a1a2a3a4a5a6a7a8", "price": 0,
     "hex": frame(0x03, "rdr_03.x", 0xFFFFFFFF, short(bytes.fromhex("0102030405060708090a"))
                  + short(bytes.fromhex("a1a2a3a4a5a6a7a8")) + struct.pack("<i", 0))},
    {"name": "heartbeat, battery unknown (255)", "type": "heartbeat", "device": "rdr-01", "seq": 3, "battery_mv": 0, "battery_pct": 255,
     "hex": frame(0x02, "rdr-01", 3, struct.pack("<HB", 0, 255))},
]

# SPEC.md §6.1: every NAK reason, addressed; and the anonymous NAK of §6.3 (id_len 0, seq 0).
NAK_REASONS = {1: "unparseable", 2: "unknown device", 3: "unsupported version", 4: "unsupported type",
               5: "wrong device kind", 6: "conflict", 7: "implausible reading"}
for reason, what in NAK_REASONS.items():
    vectors.append({"name": f"nak {reason}: {what}", "type": "nak", "device": "btn-0003", "seq": 100 + reason,
                    "reason": reason, "hex": frame(0x11, "btn-0003", 100 + reason, bytes([reason]))})
for reason in (1, 3):
    vectors.append({"name": f"anonymous nak {reason}: {NAK_REASONS[reason]}, id unreadable", "type": "nak",
                    "device": "", "seq": 0, "reason": reason, "hex": frame(0x11, "", 0, bytes([reason]))})


# SPEC.md §6.4: every DISPLAY result with the amounts it carries.
def display(seq, result, name_utf8, price, subsidy, payable, balance, what):
    n = name_utf8.encode()
    return {"name": f"display {result}: {what}", "type": "display", "device": "rdr-01", "seq": seq,
            "result": result, "name_utf8": name_utf8, "price": price, "subsidy": subsidy, "payable": payable,
            "balance": balance,
            "hex": frame(0x12, "rdr-01", seq, bytes([result]) + short(n) + struct.pack("<iiii", price, subsidy, payable, balance))}


vectors += [
    display(50, 1, "", 0, 0, 0, 0, "unknown card: no name, amounts 0, balance 0 = not shown"),
    display(51, 2, "张*华", 0, 0, 0, 0, "lost card: amounts 0, balance 0 = not shown"),
    display(52, 3, "张*华", 0, 0, 0, 8650, "outside meal period: amounts 0, current balance"),
    display(53, 5, "张*华", 0, 0, 0, 8650, "no price: amounts 0, current balance"),
    display(54, 6, "张*华", 0, 0, 0, 8650, "refused (please see staff): amounts 0, current balance"),
    display(55, 0, "阿" + "*" * 21, 1500, 150, 1350, 2147483647,
            "paid, a 25-character name masked (29 bytes) and cut to 24 bytes, balance clamped to i32::MAX"),
    display(57, 0, "阿" + "*" * 19, 1500, 150, 1350, 8650,
            "paid, a 21-character name masked (25 bytes) and cut at the character boundary before 24 bytes: 22 bytes"),
    display(56, 4, "张*华", 1500, 0, 1500, -2147483648, "insufficient balance, balance clamped to i32::MIN"),
]
assert len(("阿" + "*" * 21).encode()) == 24 and len(("阿" + "*" * 19 + "提").encode()) == 25

# Frames with a good CRC that every gateway refuses from the frame itself (SPEC.md §6.2 checks
# 2, 3, 5 for unknown and gateway-to-device types, 6). Ids are registered in the demo config with
# a kind that may send the type.
ANON = ""
refused_cases = [
    ("alarm press with a trailing byte", header(0x01, "btn-0003", 200) + bytes([1, 0x42]), 1, "btn-0003", 200),
    ("alarm with no action byte (short body)", header(0x01, "btn-0003", 201), 1, "btn-0003", 201),
    ("alarm action 0", header(0x01, "btn-0003", 202) + bytes([0]), 1, "btn-0003", 202),
    ("alarm action 4", header(0x01, "btn-0003", 203) + bytes([4]), 1, "btn-0003", 203),
    ("alarm action 9", header(0x01, "btn-0003", 204) + bytes([9]), 1, "btn-0003", 204),
    ("heartbeat one byte short", header(0x02, "btn-0003", 205) + struct.pack("<H", 2950), 1, "btn-0003", 205),
    ("heartbeat with a trailing byte", header(0x02, "btn-0003", 206) + struct.pack("<HBB", 2950, 81, 1), 1, "btn-0003", 206),
    ("card tap, uid_len 3", header(0x03, "rdr-01", 207) + short(bytes.fromhex("1ddccf")) + short(b""), 1, "rdr-01", 207),
    ("card tap, uid_len 11", header(0x03, "rdr-01", 208) + short(bytes(range(1, 12))) + short(b""), 1, "rdr-01", 208),
    ("card tap, mac_len 9", header(0x03, "rdr-01", 209) + short(bytes.fromhex("1ddccf2d")) + short(bytes(range(1, 10))), 1, "rdr-01", 209),
    ("card tap, uid_len 10 but 4 UID bytes (short body)", header(0x03, "rdr-01", 210) + bytes([10]) + bytes.fromhex("1ddccf2d"), 1, "rdr-01", 210),
    ("card tap, 3 bytes after the MAC (neither no price nor an i32)", header(0x03, "rdr-01", 211) + short(bytes.fromhex("1ddccf2d")) + short(b"") + bytes([1, 2, 3]), 1, "rdr-01", 211),
    ("card tap, 5 bytes after the MAC (a price and a trailing byte)", header(0x03, "rdr-01", 212) + short(bytes.fromhex("1ddccf2d")) + short(b"") + struct.pack("<iB", 1580, 7), 1, "rdr-01", 212),
    ("id_len 0 (only the gateway's NAK may be anonymous)", header(0x01, "", 213) + bytes([1]), 1, ANON, 0),
    ("a NAK with id_len 0 sent by a device", header(0x11, "", 214) + bytes([1]), 1, ANON, 0),
    ("id_len 17", header(0x01, "btn-0123456789.AB", 215) + bytes([1]), 1, ANON, 0),
    ("id with a space", header(0x01, "btn 0003", 216) + bytes([1]), 1, ANON, 0),
    ("id with a non-ASCII byte", header(0x01, "btn-000\u00e9", 217) + bytes([1]), 1, ANON, 0),
    ("frame ends inside its id (id_len 16, 8 id bytes)", header(0x01, "btn-0003", 218, id_len=16)[:11], 1, ANON, 0),
    ("frame ends inside its seq", header(0x01, "btn-0003", 219)[:13], 1, ANON, 0),
    ("version 2 with a readable header: NAK 3 addressed", header(0x01, "btn-0003", 220, version=2) + bytes([1]), 3, "btn-0003", 220),
    ("version 0 with a readable header and a body v1 would refuse: version wins", header(0x01, "btn-0003", 221, version=0) + bytes([9, 9]), 3, "btn-0003", 221),
    ("version 2, header unreadable (id_len 0): anonymous NAK 3", header(0x01, "", 222, version=2) + bytes([1]), 3, ANON, 0),
    ("version 0xFF, header unreadable (id_len 200): anonymous NAK 3", bytes([0xFF, 0x01, 200]) + b"btn-0003" + bytes(4), 3, ANON, 0),
    ("unknown type 0x7F", header(0x7F, "btn-0003", 223) + bytes([1]), 4, "btn-0003", 223),
    ("unknown type 0x05 with an unparseable body: type wins", header(0x05, "btn-0003", 224), 4, "btn-0003", 224),
    ("ACK sent by a device", header(0x10, "btn-0003", 225), 4, "btn-0003", 225),
    ("NAK sent by a device", header(0x11, "btn-0003", 226) + bytes([1]), 4, "btn-0003", 226),
    ("DISPLAY sent by a device", header(0x12, "rdr-01", 227) + bytes([0, 0]) + bytes(16), 4, "rdr-01", 227),
    ("READING_RESULT sent by a device", header(0x13, "kiosk-01", 228) + bytes([0, 0]), 4, "kiosk-01", 228),
    ("health reading 0", header(0x04, "kiosk-01", 229) + struct.pack("<Bii", 0, 135, 85), 1, "kiosk-01", 229),
    ("health reading 7", header(0x04, "kiosk-01", 230) + struct.pack("<Bii", 7, 135, 85), 1, "kiosk-01", 230),
    ("health, value2 one byte short", header(0x04, "kiosk-01", 231) + struct.pack("<Bi", 1, 135) + bytes(3), 1, "kiosk-01", 231),
    ("health, two bytes after the values (neither no context nor one)", header(0x04, "kiosk-01", 232) + struct.pack("<BiiBB", 2, 54, 0, 1, 1), 1, "kiosk-01", 232),
]
refused = []
for what, raw, reason, device, seq in refused_cases:
    refused.append({"name": what, "hex": wire(raw), "reason": reason, "device": device, "seq": seq,
                    "nak_hex": frame(0x11, device, seq, bytes([reason]))})


# Frames whose answer depends on the gateway's registry and journal (SPEC.md §6.2 checks 4, 5 for
# types not taken, 7, 8), given the demo configuration (deploy/eldergate.example.toml).
def nak(device, seq, reason):
    return {"type": "nak", "device": device, "seq": seq, "reason": reason, "hex": frame(0x11, device, seq, bytes([reason]))}


tap = lambda dev, seq, uid: frame(0x03, dev, seq, short(bytes.fromhex(uid)) + short(b""))
gateway = [
    {"name": "alarm press from an unregistered device", "frame": frame(0x01, "nobody", 7, bytes([1])),
     "reply": nak("nobody", 7, 2)},
    {"name": "alarm action 9 from an unregistered device: registration wins", "frame": frame(0x01, "nobody", 8, bytes([9])),
     "reply": nak("nobody", 8, 2)},
    {"name": "heartbeat from an unregistered device", "frame": frame(0x02, "nobody", 9, struct.pack("<HB", 2950, 81)),
     "reply": nak("nobody", 9, 2)},
    {"name": "ACK from an unregistered device: registration wins", "frame": frame(0x10, "nobody", 10, b""),
     "reply": nak("nobody", 10, 2)},
    {"name": "heartbeat from a registered button: accepted, no reply", "frame": frame(0x02, "btn-0003", 300, struct.pack("<HB", 2950, 81)),
     "reply": None},
    {"name": "health reading over serial from a kiosk registered on MQTT: wrong link", "frame": frame(0x04, "kiosk-01", 301, struct.pack("<Bii", 1, 135, 85)),
     "reply": nak("kiosk-01", 301, 5)},
    {"name": "health reading 9 from a kiosk: the body wins over the link",
     "frame": frame(0x04, "kiosk-01", 302, struct.pack("<Bii", 9, 135, 85)), "reply": nak("kiosk-01", 302, 1)},
    {"name": "a card reader's ALARM: wrong kind", "frame": frame(0x01, "rdr-01", 303, bytes([1])),
     "reply": nak("rdr-01", 303, 5)},
    {"name": "a button's CARD_TAP: wrong kind (4 on a gateway without a canteen)", "frame": tap("btn-0003", 304, "1ddccf2d"),
     "reply": nak("btn-0003", 304, 5)},
    {"name": "a card reader's ALARM with action 9: the body wins over the kind", "frame": frame(0x01, "rdr-01", 305, bytes([9])),
     "reply": nak("rdr-01", 305, 1)},
    {"name": "alarm press retransmitted: a duplicate, ACKed again", "before": [frame(0x01, "btn-0003", 306, bytes([1]))],
     "frame": frame(0x01, "btn-0003", 306, bytes([1])), "reply": {"type": "ack", "device": "btn-0003", "seq": 306, "hex": frame(0x10, "btn-0003", 306, b"")}},
    {"name": "a cancel under a committed press's seq: a conflict, but alarms are acted on and ACKed", "before": [frame(0x01, "btn-0003", 307, bytes([1]))],
     "frame": frame(0x01, "btn-0003", 307, bytes([2])), "reply": {"type": "ack", "device": "btn-0003", "seq": 307, "hex": frame(0x10, "btn-0003", 307, b"")}},
    {"name": "another card under a committed tap's seq: conflict", "before": [tap("rdr-01", 308, "1ddccf2d")],
     "frame": tap("rdr-01", 308, "1b935513"), "reply": nak("rdr-01", 308, 6)},
]

print(json.dumps({"spec": "protocol/SPEC.md v1", "crc_check": {"input": "123456789", "crc": "29b1"},
                  "vectors": vectors, "refused": refused,
                  "gateway": {"config": "deploy/eldergate.example.toml", "vectors": gateway}},
                 ensure_ascii=False, indent=1))
