"""A DNS server on 127.0.0.1 for the tests: it answers A queries for one
name with that name's addresses (127.0.0.1 unless given) and records every
name it is asked for."""

import socket
import struct
import threading

# Header flags of a response: QR, RD and RA set, with the response code added.
RESPONSE_FLAGS = 0x8180
NO_ERROR = 0
NAME_ERROR = 3
TYPE_A = 1
CLASS_IN = 1
# An answer's name as a pointer to the question's name at offset 12.
NAME_POINTER = 0xC00C


def parse_question(message: bytes) -> tuple[str, int, int]:
    """Return the first question's name, its type and where the section ends."""
    labels = []
    offset = 12
    while message[offset]:
        length = message[offset]
        labels.append(message[offset + 1 : offset + 1 + length].decode("ascii"))
        offset += 1 + length
    query_type = struct.unpack_from("!H", message, offset + 1)[0]
    return ".".join(labels).lower(), query_type, offset + 5


class DnsServer:
    def __init__(self, name: str, *addresses: str):
        self.name = name
        # One A record per address, in this order, in every response.
        self.addresses = [socket.inet_aton(a) for a in addresses or ["127.0.0.1"]]
        self.queries: list[str] = []
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "DnsServer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._socket.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while True:
            try:
                message, client = self._socket.recvfrom(512)
            except OSError:
                return
            self._socket.sendto(self._response(message), client)

    def _response(self, message: bytes) -> bytes:
        query_id = struct.unpack_from("!H", message)[0]
        name, query_type, end = parse_question(message)
        self.queries.append(name)
        found = name == self.name and query_type == TYPE_A
        code = NO_ERROR if found else NAME_ERROR
        answers = self.addresses if found else []
        header = struct.pack(
            "!HHHHHH", query_id, RESPONSE_FLAGS | code, 1, len(answers), 0, 0
        )
        response = header + message[12:end]
        for address in answers:
            response += struct.pack("!HHHIH", NAME_POINTER, TYPE_A, CLASS_IN, 0, 4)
            response += address
        return response
