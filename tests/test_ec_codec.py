"""The erasure code (sheepblk/erasure_code.py, on sheepblk/proto/ec.py's
layout): any D of the D+P strips give the data back, the layout is
Sheepdog's interleaving, and the policy byte is dog's."""

from __future__ import annotations

import itertools
import os

import pytest

from sheepblk import erasure_code
from sheepblk.proto import ec


@pytest.mark.parametrize("d,p", [(2, 1), (4, 2), (8, 3), (16, 1)])
def test_every_d_subset_decodes(d: int, p: int) -> None:
    data = os.urandom(ec.STRIPE * 37)
    strips = erasure_code.encode(data, d, p)
    assert len(strips) == d + p
    assert all(len(s) == len(data) // d for s in strips)
    subsets = list(itertools.combinations(range(d + p), d))
    if len(subsets) > 200:  # 16:1 has 17: all; 8:3 has 165
        subsets = subsets[:200]
    for subset in subsets:
        got = {i: strips[i] for i in subset}
        assert erasure_code.decode(got, d, p) == data, subset
        for i in range(d + p):
            assert erasure_code.rebuild(got, d, p, i) == strips[i], (subset, i)


def test_fewer_than_d_strips_refused() -> None:
    strips = erasure_code.encode(bytes(range(256)) * 4, 4, 2)
    with pytest.raises(ValueError, match="4 are needed"):
        erasure_code.decode({0: strips[0], 4: strips[4], 5: strips[5]}, 4, 2)


def test_layout_is_sheepdogs_interleaving() -> None:
    """Data strip i holds bytes [i*w, (i+1)*w) of every 512-byte stripe."""
    data = bytes(i % 251 for i in range(ec.STRIPE * 3))
    strips = erasure_code.encode(data, 4, 2)
    w = ec.STRIPE // 4
    for i in range(4):
        assert strips[i] == b"".join(data[s * 512 + i * w:s * 512 + (i + 1) * w]
                                     for s in range(3))


def test_stripes_are_independent() -> None:
    """Encoding a run of stripes gives the same strip bytes as encoding the
    whole object and cutting them out: a write re-encodes only its stripes."""
    data = os.urandom(ec.STRIPE * 16)
    whole = erasure_code.encode(data, 4, 2)
    first, n = ec.stripes(1000, 2000)
    assert (first, n) == (1, 5)
    part = erasure_code.encode(data[first * 512:(first + n) * 512], 4, 2)
    w = ec.width(4)
    for i in range(6):
        assert part[i] == whole[i][first * w:(first + n) * w]


def test_zero_stripes_have_zero_parity() -> None:
    assert erasure_code.encode(bytes(4096), 4, 2)[4:] == [bytes(1024)] * 2


def test_policy_bytes_are_dogs() -> None:
    assert ec.policy_of(4, 2) == 0x22
    assert ec.policy_of(2, 1) == 0x11
    assert ec.policy_of(16, 15) == 0x8F
    assert ec.policy_dp(0x22) == (4, 2)
    for d, p in [(3, 1), (4, 16), (4, 0), (1, 1)]:
        with pytest.raises(ec.PolicyError):
            ec.policy_of(d, p)
    with pytest.raises(ec.PolicyError):
        ec.policy_dp(0x30)


def test_trailer_names_the_strip() -> None:
    t = ec.trailer(5, 4, 2)
    assert len(t) == ec.TRAILER_SIZE
    assert ec.trailer_index(bytes(100) + t, 4, 2) == 5
    assert ec.trailer_index(bytes(100) + t, 2, 1) is None  # another code
    assert ec.trailer_index(bytes(108), 4, 2) is None  # never written
    assert ec.stored_size(1 << 22, 4) == (1 << 20) + ec.TRAILER_SIZE
