import numpy as np
import pytest

import qkd
from qkd.store import Store


@pytest.fixture
def material(rng):
    return rng.integers(0, 256, 1024, dtype=np.uint8)  # 8192 bits


def test_append_allocate_fetch_once(tmp_path, material):
    with Store(tmp_path / "a") as s:
        info = s.append("KME_B", "blk-1", material, qber=0.02, leaked_bits=1000)
        assert info["len_bits"] == 8192 and info["usable_bits"] == 8192 and info["qber"] == 0.02
        keys = s.allocate("KME_B", "SAE_A", ["SAE_B"], count=2, size_bits=256)
        assert [k["size_bits"] for k in keys] == [256, 256]
        assert keys[0]["key_id"] != keys[1]["key_id"]
        got = s.fetch([k["key_id"] for k in keys], "SAE_A")
        # Keys are carved from the material in append order, bit order preserved.
        ranges = [r for k in keys for r in k["material"]]
        for (kid, key), k in zip(got, keys):
            assert kid == k["key_id"] and key.dtype == np.uint8 and len(key) == 32
            r = k["material"][0]
            start = r["bit_offset"] // 8
            np.testing.assert_array_equal(key, material[start : start + 32])
        assert len(ranges) == 2
        with pytest.raises(qkd.StoreError, match="already fetched"):
            s.fetch([keys[0]["key_id"]], "SAE_A")
        st = s.link_status("KME_B")
        assert st["keys_allocated"] == 2 and st["bits_used"] == 512 and st["keys_consumed"] == 2
        assert s.key_info(keys[0]["key_id"])["state"] == "Consumed"
        assert s.key_info("00000000-0000-4000-8000-000000000000") is None
        events = s.ledger()
        assert [e["seq"] for e in events] == list(range(len(events)))
        assert s.status()["links"][0]["link"] == "KME_B"


def test_peer_reserves_same_material(tmp_path, material):
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    try:
        a.append("KME_B", "blk-1", material)
        b.append("KME_A", "blk-1", material)
        keys = a.allocate("KME_B", "SAE_A", ["SAE_B"], count=3, size_bits=128)
        b.reserve_exact("KME_A", "SAE_A", ["SAE_B"], keys, ["SAE_B"])
        ids = [k["key_id"] for k in keys]
        ka = a.fetch(ids, "SAE_A")
        kb = b.fetch(ids, "SAE_B")
        for (ia, xa), (ib, xb) in zip(ka, kb):
            assert ia == ib
            np.testing.assert_array_equal(xa, xb)
        with pytest.raises(qkd.StoreError):
            b.reserve_exact("KME_A", "SAE_A", ["SAE_B"], keys, ["SAE_B"])  # IDs exist
    finally:
        a.close()
        b.close()


def test_destroy_expire_and_errors(tmp_path, material):
    s = Store(tmp_path / "s")
    s.append("L", "b", material)
    keys = s.allocate("L", "M", count=2, size_bits=64, ttl=0.5)
    assert s.destroy([keys[0]["key_id"]]) == 1
    assert s.expire(after=10.0) == 1
    with pytest.raises(qkd.StoreError):
        s.fetch([keys[1]["key_id"]], "M")
    with pytest.raises(qkd.StoreError, match="key material|insufficient|not enough"):
        s.allocate("L", "M", count=1000, size_bits=1024)
    with pytest.raises(qkd.InputError):
        s.allocate("L", "M", size_bits=7)
    with pytest.raises(qkd.InputError, match="ttl"):
        s.allocate("L", "M", ttl=-1)
    with pytest.raises(qkd.InputError, match="not a UUID"):
        s.fetch(["nope"], "M")
    with pytest.raises(qkd.StoreError, match="already exists"):
        s.append("L", "b", material)
    with pytest.raises(TypeError):
        s.append("L", "c", None)
    with pytest.raises(qkd.InputError, match="keys"):
        s.reserve_exact("L", "M", [], [{"bogus": 1}], ["M"])
    with pytest.raises(qkd.StoreError, match="already open|locked|exclusive"):
        Store(tmp_path / "s")
    s.close()
    s.close()
    with pytest.raises(qkd.StoreError, match="closed"):
        s.status()
    Store(tmp_path / "s").close()  # reopens after close
