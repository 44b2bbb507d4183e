"""Raw-socket protocol tests: bad or hostile input gets the specified answer and never hurts other clients."""

import hashlib
import hmac
import os
import pickle
import socket
import struct
import threading
from typing import NamedTuple

import msgpack
import pytest

import tether

# --- framing helpers (the 32-byte header of docs/protocol.md) ---------------------------------

HEADER = struct.Struct("<2sBBHBBQIIQ")
assert HEADER.size == 32

HELLO, CHALLENGE, AUTH, WELCOME, REQUEST, REPLY, ERROR = 1, 2, 3, 4, 5, 6, 7
STREAM_ITEM, CANCEL, PING, PONG, CLOSE, CREDIT = 8, 9, 10, 11, 12, 13
ENC_RAW, ENC_MSGPACK, ENC_PICKLE = 0, 1, 2
FLAG_ONEWAY = 0x1

IO_TIMEOUT = 10


def pack(value):
    return msgpack.packb(value, use_bin_type=True)


def unpack(data):
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def frame(msg_type, body=b"", *, request_id=0, meta=b"", encoding=ENC_MSGPACK, flags=0,
          timeout_ms=0, magic=b"TH", version=1, reserved=0, meta_len=None, body_len=None):
    """One frame; meta_len/body_len override the real lengths to build lying headers."""
    header = HEADER.pack(
        magic, version, msg_type, flags, encoding, reserved, request_id,
        len(meta) if meta_len is None else meta_len, timeout_ms,
        len(body) if body_len is None else body_len,
    )
    return header + meta + body


def request_frame(request_id, obj, method, args=(), kwargs=None, **options):
    meta = f"{obj}\0{method}".encode()
    return frame(REQUEST, pack([list(args), kwargs]), request_id=request_id, meta=meta, **options)


def hello_frame(encodings=("msgpack",), nonce=None, **options):
    body = pack({
        "versions": [1],
        "encodings": list(encodings),
        "nonce": nonce if nonce is not None else os.urandom(16),
        "max_frame": 1 << 30,
        "heartbeat_ms": 60_000,
    })
    return frame(HELLO, body, **options)


class Frame(NamedTuple):
    version: int
    type: int
    flags: int
    encoding: int
    request_id: int
    meta: bytes
    body: bytes

    def value(self):
        return unpack(self.body)


def recv_exact(sock, n):
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise EOFError("connection closed mid-frame")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock):
    """The next frame that is not a heartbeat PING (PINGs are answered as the protocol requires)."""
    while True:
        magic, version, msg_type, flags, encoding, _, request_id, meta_len, _, body_len = HEADER.unpack(
            recv_exact(sock, HEADER.size)
        )
        assert magic == b"TH"
        meta = recv_exact(sock, meta_len)
        body = recv_exact(sock, body_len)
        if msg_type == PING:
            sock.sendall(frame(PONG, request_id=request_id, encoding=ENC_RAW))
            continue
        return Frame(version, msg_type, flags, encoding, request_id, meta, body)


def parse_frames(data):
    """Complete frames in `data`; an incomplete tail (cut by a reset) is ignored."""
    frames, offset = [], 0
    while len(data) - offset >= HEADER.size:
        magic, version, msg_type, flags, encoding, _, request_id, meta_len, _, body_len = HEADER.unpack_from(
            data, offset
        )
        end = offset + HEADER.size + meta_len + body_len
        if magic != b"TH" or end > len(data):
            break
        meta = data[offset + HEADER.size:offset + HEADER.size + meta_len]
        frames.append(Frame(version, msg_type, flags, encoding, request_id, meta, data[end - body_len:end]))
        offset = end
    return frames


def read_until_closed(sock):
    """Everything the server sends until it closes; fails if it keeps the connection open."""
    sock.settimeout(IO_TIMEOUT)
    chunks = []
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    except socket.timeout:
        pytest.fail(f"server did not close the connection within {IO_TIMEOUT}s")
    return b"".join(chunks)


def assert_closed_with(sock, kind, *, error_required):
    """The server closes the connection, after an ERROR(id 0, kind) that is optional only where the
    protocol says "if possible"."""
    frames = [f for f in parse_frames(read_until_closed(sock)) if f.type not in (PING, CLOSE)]
    if error_required:
        assert frames, f"expected ERROR({kind}) before the close, got nothing"
    for f in frames:
        assert f.type == ERROR, f"unexpected frame type {f.type}"
        assert f.request_id == 0
        assert f.value()["kind"] == kind


def connect(srv):
    host, port = srv.address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=IO_TIMEOUT)


def handshake(sock, encodings=("msgpack",)):
    sock.sendall(hello_frame(encodings))
    welcome = recv_frame(sock)
    assert welcome.type == WELCOME, f"expected WELCOME, got type {welcome.type}"
    return welcome.value()


def reset(sock):
    """Close with RST instead of FIN, as a crashed peer would."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# --- the server under attack -------------------------------------------------------------------

TRIPPED = []


def _trip():
    TRIPPED.append("unpickled")


class Tripwire:
    def __reduce__(self):
        return (_trip, ())


@tether.expose
class Target:
    def __init__(self):
        self.private_ran = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()
        self.marked = threading.Event()

    def echo(self, value):
        return value

    def mark(self):
        self.marked.set()
        return "marked"

    def add(self, a, b):
        return a + b

    def block(self):
        self.entered.set()
        try:
            return self.release.wait(30)
        finally:
            self.finished.set()

    def _private(self):
        self.private_ran = True
        return "private"


@pytest.fixture
def target(server):
    obj = Target()
    uri = server.register(obj, "target")
    TRIPPED.clear()
    try:
        yield server, obj, uri
    finally:
        obj.release.set()


@pytest.fixture
def raw(target):
    """A raw socket to the target's server, closed after the test."""
    srv = target[0]
    sock = connect(srv)
    try:
        yield sock
    finally:
        sock.close()


def assert_server_healthy(uri):
    with tether.Proxy(uri, timeout=10) as proxy:
        assert proxy.echo("still serving") == "still serving"


# --- the tests ----------------------------------------------------------------------------------

def test_raw_handshake_and_request_work(target, raw):
    """Baseline: the helpers here speak the protocol, so failures below mean what they say."""
    welcome = handshake(raw)
    assert welcome["version"] == 1
    assert "msgpack" in welcome["encodings"]
    assert "pickle" not in welcome["encodings"]
    assert welcome["authenticated"] is False
    raw.sendall(request_frame(7, "target", "add", [40, 2]))
    reply = recv_frame(raw)
    assert (reply.type, reply.request_id) == (REPLY, 7)
    assert reply.value() == 42


def test_garbage_bytes_close_only_that_connection(target, raw):
    """Someone speaking HTTP to the port is dropped, and everyone else is unaffected."""
    raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".ljust(32, b"\0"))
    assert_closed_with(raw, "bad_request", error_required=False)
    assert_server_healthy(target[2])


def test_wrong_magic_is_rejected(target, raw):
    """A frame without the TH magic is not tether and ends the connection."""
    raw.sendall(hello_frame(magic=b"XX"))
    assert_closed_with(raw, "bad_request", error_required=False)
    assert_server_healthy(target[2])


def test_unsupported_protocol_version_is_unimplemented(target, raw):
    """A future protocol version is refused with kind unimplemented so the peer can fall back."""
    raw.sendall(frame(HELLO, b"", version=99))
    assert_closed_with(raw, "unimplemented", error_required=True)
    assert_server_healthy(target[2])


def test_truncated_frame_then_close(target, raw):
    """EOF in the middle of a frame must not crash or wedge the server."""
    raw.sendall(hello_frame()[:40])
    raw.shutdown(socket.SHUT_WR)
    assert_closed_with(raw, "bad_request", error_required=False)
    assert_server_healthy(target[2])


def test_truncated_request_after_handshake_then_close(target, raw):
    """EOF mid-REQUEST on an established connection is handled like any other disconnect."""
    handshake(raw)
    raw.sendall(request_frame(1, "target", "echo", ["x" * 1000])[:100])
    raw.shutdown(socket.SHUT_WR)
    assert_closed_with(raw, "bad_request", error_required=False)
    assert_server_healthy(target[2])


def test_body_length_over_the_limit_is_rejected_without_reading_it(target, raw):
    """A header claiming a 1 TiB body must be refused at once, not buffered or allocated."""
    handshake(raw)
    raw.sendall(frame(REQUEST, b"", request_id=1, meta=b"target\0echo", body_len=1 << 40))
    assert_closed_with(raw, "bad_request", error_required=False)
    assert_server_healthy(target[2])


def test_body_length_over_the_limit_before_handshake_is_rejected(target, raw):
    """The size limit also protects the handshake, before anything is negotiated."""
    raw.sendall(frame(HELLO, b"", body_len=1 << 40))
    assert_closed_with(raw, "bad_request", error_required=False)
    assert_server_healthy(target[2])


def test_meta_length_over_the_limit_is_rejected(target, raw):
    """meta is at most 65535 bytes; a larger claim is a malformed frame."""
    handshake(raw)
    raw.sendall(frame(REQUEST, b"", request_id=1, meta_len=70_000))
    assert_closed_with(raw, "bad_request", error_required=False)
    assert_server_healthy(target[2])


def test_unknown_message_type_is_unimplemented_and_the_connection_kept(target, raw):
    """Newer peers may send types we do not know: answer unimplemented for that id and carry on."""
    handshake(raw)
    raw.sendall(frame(200, b"", request_id=77, encoding=ENC_RAW))
    error = recv_frame(raw)
    assert (error.type, error.request_id) == (ERROR, 77)
    assert error.value()["kind"] == "unimplemented"
    raw.sendall(request_frame(78, "target", "echo", ["same connection"]))
    reply = recv_frame(raw)
    assert (reply.type, reply.request_id) == (REPLY, 78)
    assert reply.value() == "same connection"
    assert_server_healthy(target[2])


def test_request_before_handshake_is_denied(target, raw):
    """Nothing is dispatched before WELCOME; an early REQUEST is denied and the connection closed."""
    raw.sendall(request_frame(1, "target", "echo", ["sneaky"]))
    assert_closed_with(raw, "denied", error_required=True)
    assert_server_healthy(target[2])


BAD_REQUESTS = {
    # A body that is not valid msgpack.
    "undecodable_body": frame(REQUEST, b"\xc1\xc1\xc1", request_id=5, meta=b"target\0echo"),
    # Found by the payload fuzzer: 5 bytes declaring 4 billion elements must not be allocated.
    "huge_declared_array": frame(REQUEST, b"\xdd\xff\xff\xff\xff", request_id=5, meta=b"target\0echo"),
    # An encoding number the server does not know.
    "unknown_encoding": request_frame(5, "target", "echo", ["x"], encoding=9),
    # kwargs of the wrong shape (they once reached the call unchecked).
    "kwargs_not_a_map": frame(REQUEST, pack([["x"], [1, 2]]), request_id=5, meta=b"target\0echo"),
}


@pytest.mark.parametrize("bad", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_a_bad_request_fails_alone_and_the_connection_is_kept(target, raw, bad):
    """A malformed REQUEST is answered ERROR(bad_request) for its id only; the next request is served."""
    handshake(raw)
    raw.sendall(bad)
    error = recv_frame(raw)
    assert (error.type, error.request_id) == (ERROR, 5)
    assert error.value()["kind"] == "bad_request"
    raw.sendall(request_frame(6, "target", "add", [1, 2]))
    reply = recv_frame(raw)
    assert (reply.type, reply.request_id, reply.value()) == (REPLY, 6, 3)


def test_hello_declaring_a_huge_array_is_refused(target, raw):
    """Found by the frame fuzzer: a HELLO whose body declares a 4-billion-element array is refused
    cleanly instead of being allocated, and the server serves everyone else."""
    raw.sendall(frame(HELLO, b"\x81\xa8versions\xdd\xff\xff\xff\xff"))
    assert_closed_with(raw, "bad_request", error_required=True)
    assert_server_healthy(target[2])


def test_pickle_request_on_an_unauthenticated_connection_is_denied_unread(target, raw):
    """Pickle was not in WELCOME, so a pickled body is denied and never unpickled (no code runs)."""
    handshake(raw, encodings=("msgpack", "pickle"))
    body = pickle.dumps([[Tripwire()], None], protocol=5)
    raw.sendall(frame(REQUEST, body, request_id=9, meta=b"target\0echo", encoding=ENC_PICKLE))
    error = recv_frame(raw)
    assert (error.type, error.request_id) == (ERROR, 9)
    assert error.value()["kind"] == "denied"
    assert TRIPPED == []
    assert_server_healthy(target[2])


def test_private_method_is_refused_by_the_server_itself(target, raw):
    """The server, not only the proxy, refuses names starting with _."""
    _, obj, _ = target
    handshake(raw)
    raw.sendall(request_frame(3, "target", "_private"))
    error = recv_frame(raw)
    assert (error.type, error.request_id) == (ERROR, 3)
    assert error.value()["kind"] == "unimplemented"
    assert obj.private_ran is False


def test_unknown_object_and_method_are_unimplemented(target, raw):
    """Asking for a name that is not served is answered, per request, with unimplemented."""
    handshake(raw)
    raw.sendall(request_frame(1, "nobody", "echo", ["x"]))
    raw.sendall(request_frame(2, "target", "nothing_here"))
    errors = {}
    for _ in range(2):
        error = recv_frame(raw)
        assert error.type == ERROR
        errors[error.request_id] = error.value()["kind"]
    assert errors == {1: "unimplemented", 2: "unimplemented"}


def test_ping_is_answered_with_pong_of_the_same_id(target, raw):
    """Heartbeats: any PING gets a PONG echoing its id."""
    handshake(raw)
    raw.sendall(frame(PING, b"", request_id=4242, encoding=ENC_RAW))
    pong = recv_frame(raw)
    assert (pong.type, pong.request_id) == (PONG, 4242)


def test_reserved_flag_bits_and_reserved_byte_are_ignored(target, raw):
    """Reserved fields exist for future versions; today's server must ignore them, not reject."""
    handshake(raw)
    raw.sendall(request_frame(11, "target", "echo", ["ok"], flags=0x8000, reserved=0xFF))
    reply = recv_frame(raw)
    assert (reply.type, reply.request_id, reply.value()) == (REPLY, 11, "ok")


def test_oneway_request_gets_no_reply(target, raw):
    """With the ONEWAY flag the method runs but nothing is sent back for that id."""
    _, obj, _ = target
    handshake(raw)
    raw.sendall(request_frame(21, "target", "mark", flags=FLAG_ONEWAY))
    assert obj.marked.wait(10)
    raw.sendall(request_frame(22, "target", "echo", ["next"]))
    reply = recv_frame(raw)
    assert (reply.type, reply.request_id, reply.value()) == (REPLY, 22, "next")


def test_replies_may_arrive_out_of_order_but_match_their_ids(target, raw):
    """A blocked request must not hold back the reply to a later one on the same connection."""
    _, obj, _ = target
    handshake(raw)
    raw.sendall(request_frame(1, "target", "block"))
    assert obj.entered.wait(10)
    raw.sendall(request_frame(2, "target", "echo", ["fast"]))
    first = recv_frame(raw)
    assert (first.type, first.request_id, first.value()) == (REPLY, 2, "fast")
    obj.release.set()
    second = recv_frame(raw)
    assert (second.type, second.request_id, second.value()) == (REPLY, 1, True)


def test_abrupt_reset_mid_call_leaves_the_server_serving(target, raw):
    """A peer that vanishes (RST) while its call runs must not disturb the server or its reply path."""
    _, obj, uri = target
    handshake(raw)
    raw.sendall(request_frame(1, "target", "block"))
    assert obj.entered.wait(10)
    reset(raw)
    assert_server_healthy(uri)
    obj.release.set()
    assert obj.finished.wait(10)
    assert_server_healthy(uri)


def test_idle_half_open_connection_does_not_block_others(target, raw):
    """A client that connects and says nothing must not stall the accept loop or other clients."""
    assert_server_healthy(target[2])
    raw.sendall(b"TH")
    assert_server_healthy(target[2])


def test_many_bad_connections_at_once(target):
    """A burst of hostile connections leaves the server serving."""
    socks = [connect(target[0]) for _ in range(20)]
    try:
        for i, sock in enumerate(socks):
            sock.sendall(b"\xff" * 32 if i % 2 else frame(REQUEST, b"", request_id=1))
        for sock in socks:
            read_until_closed(sock)
    finally:
        for sock in socks:
            sock.close()
    assert_server_healthy(target[2])


# --- authentication on the wire -------------------------------------------------------------------

SECRET = b"wire-secret"


@pytest.fixture
def secured(make_server):
    srv = make_server(secret=SECRET, allow_pickle=True)
    uri = srv.register(Target(), "target")
    sock = connect(srv)
    try:
        yield srv, uri, sock
    finally:
        sock.close()


def client_proof(secret, client_nonce, server_nonce):
    return hmac.new(secret, b"tether-v1-client" + client_nonce + server_nonce, hashlib.sha256).digest()


def server_proof(secret, client_nonce, server_nonce):
    return hmac.new(secret, b"tether-v1-server" + server_nonce + client_nonce, hashlib.sha256).digest()


def start_auth(sock):
    client_nonce = os.urandom(16)
    sock.sendall(hello_frame(("msgpack", "pickle"), nonce=client_nonce))
    challenge = recv_frame(sock)
    assert challenge.type == CHALLENGE, f"expected CHALLENGE, got type {challenge.type}"
    server_nonce = challenge.value()["nonce"]
    assert isinstance(server_nonce, bytes) and len(server_nonce) == 16
    return client_nonce, server_nonce


def test_correct_proof_gets_an_authenticated_welcome_with_server_proof(secured):
    """Mutual authentication: the server proves it knows the secret too, and then offers pickle."""
    _, _, sock = secured
    client_nonce, server_nonce = start_auth(sock)
    sock.sendall(frame(AUTH, pack({"proof": client_proof(SECRET, client_nonce, server_nonce)})))
    welcome = recv_frame(sock)
    assert welcome.type == WELCOME
    value = welcome.value()
    assert value["authenticated"] is True
    assert value["proof"] == server_proof(SECRET, client_nonce, server_nonce)
    assert "pickle" in value["encodings"]
    sock.sendall(request_frame(1, "target", "add", [2, 3]))
    reply = recv_frame(sock)
    assert (reply.type, reply.request_id, reply.value()) == (REPLY, 1, 5)


def test_wrong_proof_is_denied_and_closed(secured):
    """A wrong proof gets ERROR(denied) and the connection is closed; the server serves on."""
    _, uri, sock = secured
    client_nonce, server_nonce = start_auth(sock)
    sock.sendall(frame(AUTH, pack({"proof": client_proof(b"guess", client_nonce, server_nonce)})))
    assert_closed_with(sock, "denied", error_required=True)
    with tether.Proxy(uri, timeout=10, secret=SECRET) as proxy:
        assert proxy.echo("ok") == "ok"


def test_request_instead_of_auth_is_denied(secured):
    """Skipping AUTH after a CHALLENGE gets nothing dispatched."""
    _, _, sock = secured
    start_auth(sock)
    sock.sendall(request_frame(1, "target", "echo", ["sneaky"]))
    assert_closed_with(sock, "denied", error_required=True)


# --- found by the protocol audit ---------------------------------------------------------------

def test_request_in_the_same_write_as_hello_is_answered(target, raw):
    """A REQUEST that arrives in the same read as the handshake's end is served, not dropped."""
    raw.sendall(hello_frame() + request_frame(7, "target", "echo", ["early"]))
    assert recv_frame(raw).type == WELCOME
    reply = recv_frame(raw)
    assert (reply.type, reply.request_id, reply.value()) == (REPLY, 7, "early")


class _Evil:
    """Unpickling this runs code: the proof that a client unpickled what it never agreed to."""

    def __reduce__(self):
        return (exec, ("import builtins; builtins.tether_test_pwned = True",))


def test_client_refuses_a_pickled_reply_it_did_not_negotiate():
    """A hostile server answering with a pickle body must not get code run in the client."""
    import builtins

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def hostile_server():
        conn, _ = listener.accept()
        with conn:
            recv_frame(conn)  # HELLO
            conn.sendall(frame(WELCOME, pack({"version": 1, "encodings": ["msgpack", "pickle"],
                                              "max_frame": 1 << 30, "heartbeat_ms": 60_000,
                                              "authenticated": False})))
            request = recv_frame(conn)  # $meta.describe
            conn.sendall(frame(REPLY, pickle.dumps(_Evil()), request_id=request.request_id, encoding=ENC_PICKLE))
            try:
                recv_frame(conn)
            except (EOFError, OSError):
                pass

    thread = threading.Thread(target=hostile_server, daemon=True)
    thread.start()
    try:
        with pytest.raises(PermissionError, match="did not negotiate pickle"):
            tether.Proxy(f"tether://127.0.0.1:{port}/anything", timeout=10).anything()
        assert not getattr(builtins, "tether_test_pwned", False), "the client unpickled a hostile reply"
    finally:
        listener.close()
        thread.join(10)
