"""Drives a raftkv node with redis-py, unmodified, in its default mode and in
RESP2 and RESP3 explicitly. Usage: redis_py_check.py PORT [PORT ...]
Exits non-zero with a message on the first surprise."""

import sys

import redis


def check(port, protocol):
    kwargs = {} if protocol is None else {"protocol": protocol}
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10, **kwargs)
    tag = f"p{port}-{protocol}"
    assert r.ping() is True
    assert r.set(f"{tag}:a", "1") is True
    assert r.get(f"{tag}:a") == b"1"
    assert r.get(f"{tag}:missing") is None
    assert r.incr(f"{tag}:a") == 2
    assert r.incrby(f"{tag}:a", 10) == 12
    assert r.mset({f"{tag}:b": "x", f"{tag}:c": b"\x00\r\n\xff"}) is True
    assert r.mget(f"{tag}:a", f"{tag}:b", f"{tag}:c", f"{tag}:none") == [
        b"12", b"x", b"\x00\r\n\xff", None]
    assert r.exists(f"{tag}:a", f"{tag}:a", f"{tag}:none") == 2
    assert r.delete(f"{tag}:b", f"{tag}:none") == 1
    # SET's options as redis-py sends them, and SETNX.
    assert r.set(f"{tag}:a", "13", nx=True) is None
    assert r.set(f"{tag}:a", "13", xx=True, get=True) == b"12"
    assert r.setnx(f"{tag}:lock", "me") is True
    assert r.setnx(f"{tag}:lock", "you") is False
    assert r.get(f"{tag}:lock") == b"me"
    assert r.set(f"{tag}:a", "12") is True
    try:
        r.incr(f"{tag}:c")
        raise AssertionError("INCR on a non-integer succeeded")
    except redis.ResponseError as e:
        assert "not an integer" in str(e), e

    # The default pipeline is a MULTI/EXEC transaction: one log entry.
    with r.pipeline() as pipe:
        pipe.set(f"{tag}:t1", "one").incr(f"{tag}:ctr").get(f"{tag}:t1").incr(f"{tag}:c")
        results = pipe.execute(raise_on_error=False)
    assert results[:3] == [True, 1, b"one"], results
    assert isinstance(results[3], redis.ResponseError), results

    # A pipeline without a transaction: plain pipelining.
    with r.pipeline(transaction=False) as pipe:
        for i in range(100):
            pipe.incr(f"{tag}:pipelined")
        assert pipe.execute() == list(range(1, 101))

    # Keyspace commands and timeouts, as redis-py sends them.
    assert r.set(f"{tag}:ttl", "v", ex=100) is True
    assert 90 <= r.ttl(f"{tag}:ttl") <= 100
    assert r.expire(f"{tag}:a", 50, nx=True) is True
    assert 0 < r.pttl(f"{tag}:a") <= 50_000
    assert r.persist(f"{tag}:a") is True
    assert r.ttl(f"{tag}:a") == -1
    assert r.setex(f"{tag}:gone", 1, "v") is True
    assert r.pexpire(f"{tag}:gone", 1) is True
    assert r.append(f"{tag}:lock", "!") == 3
    assert r.strlen(f"{tag}:lock") == 3
    assert r.type(f"{tag}:lock") == b"string"
    assert r.rename(f"{tag}:lock", f"{tag}:lock2") is True
    assert r.getdel(f"{tag}:lock2") == b"me!"
    keys = set(r.keys(f"{tag}:*"))
    assert f"{tag}:ttl".encode() in keys and f"{tag}:lock2".encode() not in keys, keys
    gone = {f"{tag}:gone".encode()}  # expires within a millisecond, maybe in between
    assert set(r.scan_iter(match=f"{tag}:*", count=1000)) - gone == keys - gone

    info = r.info()
    assert info["role"] in ("leader", "follower"), info
    for field in ("id", "term", "leader_id", "commit_index", "applied_index", "keys"):
        assert field in info, field
    # Callers treat every Keyspace entry as a database's dict, as Redis's are.
    keyspace = r.info("keyspace")
    assert sum(db["keys"] for db in keyspace.values()) == r.dbsize(), keyspace
    r.close()
    print(f"redis-py {redis.__version__} protocol={protocol or 'default'} port {port}: ok")


def main():
    for port in map(int, sys.argv[1:]):
        for protocol in (None, 2, 3):
            check(port, protocol)


if __name__ == "__main__":
    main()
