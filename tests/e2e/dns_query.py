"""A minimal DNS client (RFC 1035) for asking the cluster's CoreDNS: one question over UDP or
TCP, the answer's response code and A records. Enough to test name resolution without a DNS
library or `dig`."""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass

TYPE_A = 1
CLASS_IN = 1
RCODE_NOERROR = 0
RCODE_NXDOMAIN = 3
RCODE_REFUSED = 5


@dataclass(frozen=True)
class DnsAnswer:
    rcode: int
    addresses: list[str]
    """The A records' addresses, in answer order."""


def query_a(
    server: str, port: int, name: str, *, tcp: bool = False, timeout: float = 5, attempts: int = 2
) -> DnsAnswer:
    """Ask `server:port` for the A records of `name` (recursion desired). Over UDP a lost or late
    answer is asked again, as a stub resolver does (resolv.conf's defaults: timeout 5, attempts 2).
    """
    query_id = int.from_bytes(os.urandom(2), "big")
    header = struct.pack(">HHHHHH", query_id, 0x0100, 1, 0, 0, 0)
    question = _encode_name(name) + struct.pack(">HH", TYPE_A, CLASS_IN)
    message = header + question
    if tcp:
        with socket.create_connection((server, port), timeout=timeout) as connection:
            connection.sendall(struct.pack(">H", len(message)) + message)
            length = struct.unpack(">H", _receive_exactly(connection, 2))[0]
            return _parse_response(_receive_exactly(connection, length), query_id)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(timeout)
        for attempt in range(1, attempts + 1):
            udp.sendto(message, (server, port))
            try:
                return _parse_response(udp.recv(4096), query_id)
            except TimeoutError:
                if attempt == attempts:
                    raise
    raise ValueError(f"attempts must be at least 1, not {attempts}")


def _encode_name(name: str) -> bytes:
    labels = [label.encode("ascii") for label in name.rstrip(".").split(".")]
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


def _receive_exactly(connection: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = connection.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the DNS server closed the connection mid-answer")
        data += chunk
    return data


def _skip_name(message: bytes, offset: int) -> int:
    """The offset just past the (possibly compressed) name at `offset`."""
    while True:
        length = message[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:  # a pointer ends the name
            return offset + 2
        offset += 1 + length


def _parse_response(message: bytes, query_id: int) -> DnsAnswer:
    answer_id, flags, question_count, answer_count, _, _ = struct.unpack(">HHHHHH", message[:12])
    if answer_id != query_id or not flags & 0x8000:
        raise ValueError(f"not the answer to query {query_id}: id {answer_id}, flags {flags:#x}")
    offset = 12
    for _ in range(question_count):
        offset = _skip_name(message, offset) + 4
    addresses = []
    for _ in range(answer_count):
        offset = _skip_name(message, offset)
        record_type, _, _, length = struct.unpack(">HHIH", message[offset : offset + 10])
        offset += 10
        if record_type == TYPE_A:
            addresses.append(socket.inet_ntoa(message[offset : offset + length]))
        offset += length
    return DnsAnswer(rcode=flags & 0x000F, addresses=addresses)
