import numpy as np
import pytest

import qkd
from conftest import bits_of, pack_ref


def test_pack_unpack_roundtrip_matches_numpy_little_order(rng):
    bits = rng.integers(0, 2, 1001).astype(bool)
    packed = qkd.pack_bits(bits)
    assert packed.dtype == np.uint8 and packed.shape == (126,)
    np.testing.assert_array_equal(packed, pack_ref(bits))
    back = qkd.unpack_bits(packed, bits=1001)
    assert back.dtype == np.bool_
    np.testing.assert_array_equal(back, bits)


def test_bit_order_by_hand():
    # bit 0 -> byte 0 bit 0, bit 9 -> byte 1 bit 1
    bits = np.zeros(10, dtype=bool)
    bits[0] = bits[9] = True
    assert qkd.pack_bits(bits).tolist() == [0x01, 0x02]
    assert qkd.unpack_bits(b"\x80", bits=8).tolist() == [False] * 7 + [True]


def test_bytes_and_bytearray_and_strided_views_accepted(rng):
    data = rng.integers(0, 256, 64, dtype=np.uint8)
    np.testing.assert_array_equal(qkd.pack_bits(bytes(data)), data)
    np.testing.assert_array_equal(qkd.pack_bits(bytearray(data)), data)
    strided = data[::2]
    np.testing.assert_array_equal(qkd.pack_bits(strided), strided)


@pytest.mark.parametrize(
    "bad",
    [np.zeros(8, dtype=np.float64), np.zeros(8, dtype=np.int32), np.zeros((2, 4), dtype=np.uint8)],
)
def test_wrong_dtype_or_shape_is_input_error(bad):
    with pytest.raises(qkd.InputError, match="expected a 1-D uint8"):
        qkd.pack_bits(bad)


def test_none_and_wrong_type_are_type_errors():
    with pytest.raises(TypeError, match="got None"):
        qkd.unpack_bits(None)
    with pytest.raises(TypeError, match="got list"):
        qkd.unpack_bits([1, 0, 1])


def test_packed_length_and_tail_checks():
    with pytest.raises(qkd.InputError, match="expected ceil"):
        qkd.unpack_bits(np.zeros(3, dtype=np.uint8), bits=9)
    with pytest.raises(qkd.InputError, match="bits past bit 9"):
        qkd.unpack_bits(np.array([0, 0x04], dtype=np.uint8), bits=9)
    with pytest.raises(qkd.InputError, match="bool array has 5 elements"):
        qkd.pack_bits(np.zeros(5, dtype=bool), bits=6)


def test_error_hierarchy():
    assert issubclass(qkd.InputError, qkd.QkdError)
    assert issubclass(qkd.InputError, ValueError)
    assert issubclass(qkd.ProtocolError, qkd.QkdError)
    assert issubclass(qkd.StoreError, qkd.QkdError)
    assert issubclass(qkd.EtsiError, qkd.ProtocolError)


def test_docstrings_show_in_help():
    for f in [
        qkd.simulate,
        qkd.estimate.estimate_qber,
        qkd.cascade.reconcile,
        qkd.amplify.toeplitz,
        qkd.amplify.secret_length,
        qkd.entropy.assess,
        qkd.pipeline.process,
        qkd.cascade.Alice,
        qkd.cascade.Bob,
        qkd.etsi.Client,
    ]:
        assert f.__doc__ and len(f.__doc__) > 40, f
    assert "T[i][j] = s[i - j + n - 1]" in qkd.amplify.toeplitz.__doc__
