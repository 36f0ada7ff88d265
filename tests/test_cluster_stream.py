"""The pure fold (stream.py): split messages."""

from __future__ import annotations

from sheepblk.cluster.driver import Message
from sheepblk.cluster.stream import Membership, decode, encode_join, encode_leave, encode_parts
from sheepblk.proto import NodeId, SdNode

A, B = SdNode(NodeId("127.0.0.1", 1)), SdNode(NodeId("127.0.0.1", 2))


def _joined() -> Membership:
    m = Membership()
    m.apply(decode(encode_join("a", A)))
    m.apply(decode(encode_join("b", B)))
    return m


def test_parts_make_one_message_at_the_last_part() -> None:
    m = _joined()
    payload = bytes(range(256)) * 10
    parts = [decode(r) for r in encode_parts("a", 7, payload, 1000)]
    assert len(parts) == 3
    other = [decode(r) for r in encode_parts("b", 1, b"xy", 1)]
    # Interleaved with another writer's split message: each comes out whole.
    assert m.apply(parts[0]) == [] and m.apply(other[0]) == [] and m.apply(parts[1]) == []
    assert m.busy
    assert m.apply(other[1]) == [Message(2, B, b"xy")]
    assert m.apply(parts[2]) == [Message(3, A, payload)]
    assert not m.busy
    assert "partial" not in m.to_json()


def test_a_sender_leaving_mid_message_drops_it() -> None:
    m = _joined()
    parts = [decode(r) for r in encode_parts("a", 1, b"abcdef", 2)]
    m.apply(parts[0])
    assert [type(e).__name__ for e in m.apply(decode(encode_leave("a")))] == ["Left"]
    assert not m.busy
    assert m.apply(parts[1]) == [] and m.apply(parts[2]) == []  # a gap, then a non-member


def test_empty_payload_is_one_part() -> None:
    m = _joined()
    assert m.apply(decode(encode_parts("a", 1, b"", 10)[0])) == [Message(2, A, b"")]
