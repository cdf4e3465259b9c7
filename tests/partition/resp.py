"""Minimal blocking RESP2 client over a raw socket."""
import socket


class RespError(Exception):
    pass


class ConnLost(Exception):
    """Connection failed after the request may have been sent (indeterminate)."""


class ConnRefused(Exception):
    """Could not connect: request definitely not sent."""


class Resp:
    def __init__(self, host, port, timeout=6.0, connect_timeout=1.0):
        self.host, self.port, self.timeout = host, port, timeout
        try:
            self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        except OSError as e:
            raise ConnRefused(str(e))
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    @staticmethod
    def encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode()
            elif isinstance(a, int):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def _fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise ConnLost("connection closed by server")
        self.buf += d

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            self._fill()

    def _read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return RespError(rest.decode(errors="replace"))
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            v, self.buf = self.buf[:n], self.buf[n + 2:]
            return v
        if t == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self._read() for _ in range(n)]
        raise ConnLost("bad reply type %r" % line[:40])

    def call(self, *args):
        """Returns the reply (RespError instances are returned, not raised).
        Raises ConnLost on timeout / connection failure (indeterminate)."""
        try:
            self.sock.sendall(self.encode(args))
            return self._read()
        except (socket.timeout, OSError) as e:
            raise ConnLost("%s: %s" % (type(e).__name__, e))


def info(host, port, timeout=1.0):
    c = Resp(host, port, timeout=timeout, connect_timeout=timeout)
    try:
        r = c.call("INFO", "raft")
    finally:
        c.close()
    if isinstance(r, RespError):
        raise r
    d = {}
    for line in r.decode().split("\r\n"):
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            d[k] = v
    return d


def pipeline(conn, cmds):
    """Sends cmds in one write and reads their replies in order: a list of
    (reply, monotonic ns) for those answered, and the error that ended the
    connection before the rest were (None if all were answered)."""
    import time
    out = []
    try:
        conn.sock.sendall(b"".join(Resp.encode(c) for c in cmds))
        for _ in cmds:
            out.append((conn._read(), time.monotonic_ns()))
    except (OSError, ConnLost) as e:
        return out, "%s: %s" % (type(e).__name__, e)
    return out, None
