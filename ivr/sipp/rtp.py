"""RFC 4733 telephone-event packets, written as a pcap that SIPp replays (``play_pcap_audio``).

Each key press is its own event with its own RTP timestamp, and sequence numbers run on across
the whole call, so repeated digits (11223344) arrive as separate key presses. (Debian's per-digit
pcaps all carry the same timestamp: three plays of one arrive as one digit.)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PAYLOAD_TYPE = 101
CLOCK_RATE = 8000
PACKET_SECONDS = 0.02
PCAP_DST_PORT = 6000  # SIPp maps it onto the call's media ports
_EVENT_CODES = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}


def event_code(key: str) -> int:
    try:
        return _EVENT_CODES[key.upper()]
    except KeyError:
        raise ValueError(f"not a DTMF key: {key!r}") from None


@dataclass
class RtpEventStream:
    """One call's RTP state: SSRC, next sequence number and timestamp."""

    ssrc: int
    sequence: int
    timestamp: int

    def digits_pcap(self, digits: str, *, tone: float, gap: float, volume: int = 10) -> bytes:
        """A pcap of ``digits`` as RFC 4733 events; advances the stream."""
        packets: list[tuple[float, bytes]] = []
        clock = 0.0
        for key in digits:
            code = event_code(key)
            start_ts = self.timestamp
            steps = max(1, round(tone / PACKET_SECONDS))
            for i in range(steps):
                duration = (i + 1) * int(CLOCK_RATE * PACKET_SECONDS)
                packets.append(
                    (clock, self._packet(code, volume, duration, end=False, marker=i == 0, ts=start_ts))
                )
                clock += PACKET_SECONDS
            final = steps * int(CLOCK_RATE * PACKET_SECONDS)
            for _ in range(3):  # the end packet, sent three times (RFC 4733 2.5.1.4)
                packets.append(
                    (clock, self._packet(code, volume, final, end=True, marker=False, ts=start_ts))
                )
            clock += gap
            self.timestamp = (start_ts + int((tone + gap) * CLOCK_RATE)) & 0xFFFFFFFF
        return _pcap(packets)

    def advance(self, seconds: float) -> None:
        """Time passes with no events (the timestamp follows the clock)."""
        self.timestamp = (self.timestamp + int(seconds * CLOCK_RATE)) & 0xFFFFFFFF

    def _packet(self, code: int, volume: int, duration: int, *, end: bool, marker: bool, ts: int) -> bytes:
        header = struct.pack(
            "!BBHII",
            0x80,
            (0x80 if marker else 0) | PAYLOAD_TYPE,
            self.sequence,
            ts,
            self.ssrc,
        )
        self.sequence = (self.sequence + 1) & 0xFFFF
        payload = struct.pack("!BBH", code, (0x80 if end else 0) | (volume & 0x3F), duration)
        return header + payload


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pcap(packets: list[tuple[float, bytes]]) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # Ethernet link type
    for when, rtp in packets:
        udp = struct.pack("!HHHH", PCAP_DST_PORT, PCAP_DST_PORT, 8 + len(rtp), 0) + rtp
        ip_header = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(udp),
            0,
            0x4000,
            64,
            17,
            0,
            bytes([127, 0, 0, 1]),
            bytes([127, 0, 0, 1]),
        )
        ip_header = ip_header[:10] + struct.pack("!H", _ip_checksum(ip_header)) + ip_header[12:]
        frame = b"\x00" * 12 + b"\x08\x00" + ip_header + udp
        seconds, micros = divmod(round(when * 1_000_000), 1_000_000)
        out.append(struct.pack("<IIII", seconds, micros, len(frame), len(frame)) + frame)
    return b"".join(out)
