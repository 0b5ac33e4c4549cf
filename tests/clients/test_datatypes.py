from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from augserve.clients.datatypes import (
    DATATYPES,
    datatype_of,
    deserialize_bytes_tensor,
    from_raw,
    numpy_dtype,
    serialize_bytes_tensor,
    to_raw,
)

NUMERIC = sorted(DATATYPES - {"BYTES", "BF16"})


@pytest.mark.parametrize("datatype", NUMERIC)
def test_numeric_roundtrip_is_exact_and_zero_copy(datatype):
    array = (np.arange(24) % 7).astype(numpy_dtype(datatype)).reshape(2, 3, 4)
    raw = to_raw(array)
    back = from_raw(raw, datatype, (2, 3, 4))
    np.testing.assert_array_equal(back, array)
    assert datatype_of(array) == datatype
    assert not back.flags.owndata  # a view over the received bytes


@given(hnp.arrays(np.float32, hnp.array_shapes(max_dims=4, max_side=5)))
def test_fp32_roundtrip_any_shape(array):
    back = from_raw(to_raw(array), "FP32", array.shape)
    np.testing.assert_array_equal(back, array)


def test_bf16_travels_as_uint16_words():
    import torch

    values = torch.tensor([1.5, -2.0, 3.25], dtype=torch.bfloat16)
    words = values.view(torch.int16).numpy().view(np.uint16)
    back = from_raw(to_raw(words), "BF16", (3,))
    restored = torch.from_numpy(back.view(np.int16)).view(torch.bfloat16)
    assert torch.equal(restored, values)


@given(st.lists(st.binary(max_size=20), min_size=1, max_size=10))
def test_bytes_tensor_roundtrip(items):
    array = np.empty(len(items), dtype=np.object_)
    array[:] = items
    back = deserialize_bytes_tensor(serialize_bytes_tensor(array), len(items))
    assert list(back) == items


@pytest.mark.parametrize(
    ("raw", "count"), [(b"\x05\0\0\0ab", 1), (b"\x01\0\0\0a", 2), (b"\x01", 1)]
)
def test_bytes_tensor_rejects_bad_framing(raw, count):
    with pytest.raises(ValueError, match="BYTES contents"):
        deserialize_bytes_tensor(raw, count)


def test_wrong_byte_length_names_the_sizes():
    with pytest.raises(ValueError, match=r"hold 8 bytes.*needs 12"):
        from_raw(b"\0" * 8, "FP32", (3,))


def test_unknown_datatype():
    with pytest.raises(ValueError, match="unknown datatype 'FP8'"):
        numpy_dtype("FP8")
