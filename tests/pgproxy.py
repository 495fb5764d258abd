"""pgproxy.py: a small threaded TCP proxy for the PostgreSQL wire protocol,
for tests that need a reply to get lost after the server has acted on it.

    proxy = PgProxy(0, "127.0.0.1", 55432).start()   # 0: any free port
    conninfo = f"host=127.0.0.1 port={proxy.port} dbname=..."
    proxy.arm_drop_after_commit(b"outbox.advance")
    ...
    assert proxy.fired == 1
    proxy.stop()

The proxy follows each connection's client->server messages: it remembers
every prepared statement's Parse text (armed or not), and, once armed, marks
the connection when a Bind of a statement whose text names the function, or
a simple Query naming it, goes by. From then on the server's answers are
held back until a ReadyForQuery ('Z'):
- status 'I' (idle: the server has committed): the proxy closes both
  sockets without forwarding any of the held answer, counts the drop in
  .fired and disarms after `times` drops;
- status 'T' (inside a transaction block): forwarded, and the mark stays,
  so the answer to the later COMMIT is the one lost;
- status 'E' (failed transaction), or 'I' after an ErrorResponse or a
  ROLLBACK: forwarded, mark cleared; nothing was committed.

Framing: every message is a 1-byte type and a 4-byte big-endian length that
counts itself; the client's first message (startup, SSLRequest,
GSSENCRequest, CancelRequest) has no type byte. The proxy answers SSLRequest
and GSSENCRequest itself with 'N' (no encryption; the local server runs
without TLS), so that both streams stay framed.

Used by tests/e2e/test_advance_reply_lost.py and tests/fault/run.py.
"""
import socket
import struct
import threading

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


class _Closed(Exception):
    pass


def _recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise _Closed()
        buf += chunk
    return bytes(buf)


def _read_typed(sock):
    """One typed message: (type byte, whole message bytes)."""
    head = _recv_exact(sock, 5)
    (length,) = struct.unpack("!I", head[1:5])
    if length < 4:
        raise _Closed()
    return head[:1], head + _recv_exact(sock, length - 4)


def _cstrings(body, count):
    """The first `count` NUL-terminated strings of a message body."""
    out, pos = [], 0
    for _ in range(count):
        end = body.index(b"\0", pos)
        out.append(body[pos:end])
        pos = end + 1
    return out


class _Conn:
    """One client connection and its upstream socket."""

    def __init__(self, proxy, client, server):
        self.proxy = proxy
        self.client = client
        self.server = server
        self.stmt_text = {}        # prepared statement name -> its Parse text
        self.pending = False       # a request naming the function awaits its answer
        self.lock = threading.Lock()
        self.closed = False

    def close(self):
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for s in (self.client, self.server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    # client -> server ------------------------------------------------------
    def client_to_server(self):
        try:
            # Untyped first messages: negotiate encryption away, then pass
            # the startup message (or a CancelRequest) through.
            while True:
                (length,) = struct.unpack("!I", _recv_exact(self.client, 4))
                body = _recv_exact(self.client, length - 4)
                code = struct.unpack("!I", body[:4])[0] if len(body) >= 4 else 0
                if code in (SSL_REQUEST, GSSENC_REQUEST):
                    self.client.sendall(b"N")
                    continue
                self.server.sendall(struct.pack("!I", length) + body)
                break
            while True:
                typ, msg = _read_typed(self.client)
                self.inspect(typ, msg[5:])
                self.server.sendall(msg)
        except (_Closed, OSError, ValueError, struct.error):
            pass
        finally:
            self.close()

    def inspect(self, typ, body):
        # Parse texts are kept whether armed or not: the relay prepares its
        # statements once per connection, possibly long before the arming.
        if typ == b"P":  # Parse: statement name, query text, ...
            stmt, query = _cstrings(body, 2)
            self.stmt_text[stmt] = query
        elif typ == b"C" and body[:1] == b"S":  # Close statement
            self.stmt_text.pop(_cstrings(body[1:], 1)[0], None)
        elif typ in (b"B", b"Q"):
            name = self.proxy.function_name
            if not name or not self.proxy.armed():
                return
            if typ == b"B":  # Bind: portal name, statement name, ...
                _portal, stmt = _cstrings(body, 2)
                text = self.stmt_text.get(stmt, b"")
            else:  # simple Query: the text
                text = body
            if name in text:
                self.pending = True

    # server -> client ------------------------------------------------------
    def server_to_client(self):
        held = []
        try:
            while True:
                typ, msg = _read_typed(self.server)
                if not self.pending:
                    self.client.sendall(msg)
                    continue
                held.append(msg)
                if typ != b"Z":
                    continue
                status = msg[5:6]
                if status == b"T":
                    # Inside a transaction block: the commit is yet to come
                    # (a later COMMIT's answer is the one to lose).
                    self.client.sendall(b"".join(held))
                    held = []
                    continue
                self.pending = False
                # 'I' also follows an error outside a transaction block (the
                # implicit transaction was rolled back) and a ROLLBACK.
                failed = any(m[:1] == b"E" or (m[:1] == b"C" and m[5:].rstrip(b"\0") == b"ROLLBACK")
                             for m in held)
                if status == b"I" and not failed and self.proxy.take_shot():
                    return  # committed: the client never hears of it
                self.client.sendall(b"".join(held))
                held = []
        except (_Closed, OSError, struct.error):
            pass
        finally:
            self.close()


class PgProxy:
    def __init__(self, listen_port, upstream_host, upstream_port, listen_host="127.0.0.1"):
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.upstream = (upstream_host, upstream_port)
        self.function_name = None
        self.fired = 0
        self.connections = 0  # accepted so far
        self._shots = 0
        self._lock = threading.Lock()
        self._sock = None
        self._conns = []
        self._threads = []
        self._stopping = False

    @property
    def port(self):
        return self._sock.getsockname()[1] if self._sock else self.listen_port

    def start(self):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.listen_host, self.listen_port))
        self._sock.listen(64)
        t = threading.Thread(target=self._accept, name="pgproxy-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._stopping = True
        if self._sock:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.close()
        for t in self._threads:
            t.join(5)

    def arm_drop_after_commit(self, function_name=b"outbox.advance", times=1):
        """Drop the connection, reply unsent, the next `times` times a
        request naming function_name is answered with a commit."""
        if isinstance(function_name, str):
            function_name = function_name.encode()
        with self._lock:
            self.function_name = function_name
            self._shots = times

    def disarm(self):
        with self._lock:
            self._shots = 0

    def armed(self):
        with self._lock:
            return self._shots > 0

    def take_shot(self):
        with self._lock:
            if self._shots <= 0:
                return False
            self._shots -= 1
            self.fired += 1
            return True

    def drop_all(self):
        """Close every open connection now (a plain network failure)."""
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.close()

    def _accept(self):
        while not self._stopping:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(self, client, server)
            with self._lock:
                self.connections += 1
                self._conns = [c for c in self._conns if not c.closed] + [conn]
            for fn, nm in ((conn.client_to_server, "c2s"), (conn.server_to_client, "s2c")):
                t = threading.Thread(target=fn, name=f"pgproxy-{nm}", daemon=True)
                t.start()
