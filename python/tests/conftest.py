import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(20261123)


def bits_of(packed: np.ndarray, n: int) -> np.ndarray:
    """Reference unpacking, LSB first (DESIGN §4), written with numpy only."""
    return np.unpackbits(packed, bitorder="little")[:n].astype(bool)


def pack_ref(bits: np.ndarray) -> np.ndarray:
    return np.packbits(bits.astype(np.uint8), bitorder="little")
