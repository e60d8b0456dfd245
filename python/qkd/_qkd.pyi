# Type stubs for the native extension qkd._qkd (built from python/src/*.rs).
# The public names are re-exported by qkd, qkd.estimate, qkd.cascade, qkd.amplify,
# qkd.entropy, qkd.pipeline, qkd.session and qkd.store; docstrings live on the functions
# themselves (help()).
import os
from typing import Any, Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from .results import (
    AllocatedKey,
    BlockInfo,
    BlockReport,
    BobStats,
    EntropyReport,
    MinEntropy,
    PipelineSummary,
    QberEstimate,
    ReconcileStats,
    SecretLength,
    SimulationReport,
)

KeyIn: TypeAlias = npt.NDArray[np.uint8] | npt.NDArray[np.bool_] | bytes | bytearray
KeyOut: TypeAlias = npt.NDArray[np.uint8] | npt.NDArray[np.bool_]
Report: TypeAlias = dict[str, Any]
BoundName: TypeAlias = Literal["hypergeometric", "serfling"]

DEFAULT_FALSE_ALARM: Final[float]
DEFAULT_ALGORITHM: Final[str]
MAX_TOEPLITZ_INPUT_BITS: Final[int]

def pack_bits(key: KeyIn, *, bits: int | None = None) -> npt.NDArray[np.uint8]: ...
def unpack_bits(key: KeyIn, *, bits: int | None = None) -> npt.NDArray[np.bool_]: ...

# simulation
def simulate(
    n: int,
    qber: float,
    model: Literal["iid", "bernoulli", "burst"] | str = "iid",
    seed: int | None = None,
    *,
    mean_burst_len: float | None = None,
    error_bad: float | None = None,
    burst_fraction: float | None = None,
    packed: bool = True,
) -> tuple[KeyOut, KeyOut, SimulationReport]: ...

# estimation
def qber_upper_bound(
    n: int, k: int, errors: int, eps: float = 1e-10, bound: BoundName | str = "hypergeometric"
) -> float: ...
def sample_positions(n: int, k: int, seed: bytes) -> npt.NDArray[np.int64]: ...
def disclose_sample(
    key: KeyIn, k: int, seed: bytes | None = None, *, bits: int | None = None, packed: bool = True
) -> tuple[bytes, KeyOut]: ...
def compare_sample(
    key: KeyIn,
    message: bytes,
    eps: float = 1e-10,
    bound: BoundName | str = "hypergeometric",
    *,
    bits: int | None = None,
    packed: bool = True,
) -> tuple[QberEstimate, KeyOut]: ...
def estimate_qber(
    alice: KeyIn,
    bob: KeyIn,
    k: int,
    eps: float = 1e-10,
    bound: BoundName | str = "hypergeometric",
    seed: bytes | None = None,
    *,
    bits: int | None = None,
    packed: bool = True,
) -> tuple[QberEstimate, KeyOut, KeyOut]: ...

# privacy amplification
def toeplitz(
    x: KeyIn,
    seed: KeyIn,
    m: int,
    *,
    bits: int | None = None,
    seed_bits: int | None = None,
    method: str = "auto",
    packed: bool = True,
) -> KeyOut: ...
def seed_bits_needed(n: int, m: int) -> int: ...
def secret_length(
    key_bits: int,
    sample_bits: int,
    qber: float,
    leak_ec_bits: int,
    confirm_tag_bits: int = 0,
    length_choices: int = 1,
    eps_sec: float = 1e-10,
    eps_cor: float = 1e-15,
    preparation_quality: float = 1.0,
) -> SecretLength: ...
def qber_rung(observed: float, max_qber: float = 0.11) -> tuple[float | None, int]: ...
def decoy_secret_length_json(
    counts_json: str, leak_ec_bits: int, eps_sec: float = 1e-10, eps_cor: float = 1e-15
) -> Report: ...
def decoy_expected_counts_json(device_json: str, loss_db: float, pulses: float) -> tuple[str, int]: ...
def decoy_typical_device_json() -> str: ...
def binary_entropy(p: float) -> float: ...

# entropy
def assess(data: KeyIn, false_alarm: float = ..., *, bits: int | None = None) -> EntropyReport: ...
def shannon_entropy(data: KeyIn, *, bits: int | None = None) -> float: ...
def min_entropy(data: KeyIn, *, bits: int | None = None) -> MinEntropy: ...

# Cascade
def variants() -> list[str]: ...
def reconcile(
    alice: KeyIn,
    bob: KeyIn,
    algorithm: str | None = None,
    qber: float | None = None,
    seed: bytes | None = None,
    *,
    bits: int | None = None,
    packed: bool = True,
) -> tuple[KeyOut, ReconcileStats]: ...

class Alice:
    def __init__(self, key: KeyIn, *, bits: int | None = None) -> None: ...
    def handle(self, message: bytes) -> bytes | None: ...
    @property
    def disclosed_bits(self) -> int: ...
    @property
    def done(self) -> bool: ...
    def __len__(self) -> int: ...

class Bob:
    def __init__(
        self,
        key: KeyIn,
        qber: float,
        algorithm: str | None = None,
        seed: bytes | None = None,
        *,
        bits: int | None = None,
    ) -> None: ...
    def start(self) -> bytes: ...
    def handle(self, message: bytes) -> bytes: ...
    @property
    def done(self) -> bool: ...
    def key(self, *, packed: bool = True) -> KeyOut: ...
    @property
    def stats(self) -> BobStats: ...
    def __len__(self) -> int: ...

# pipeline
def process(
    alice: KeyIn,
    bob: KeyIn,
    *,
    block_bits: int = 1 << 20,
    sample_bits: int = 1 << 14,
    algorithm: str | None = None,
    frame_bits: int = 1 << 16,
    eps_pe: float = 1e-10,
    eps_sec: float = 1e-10,
    eps_cor: float = 1e-15,
    max_qber: float = 0.11,
    toeplitz: str = "auto",
    bits: int | None = None,
    packed: bool = True,
) -> tuple[list[KeyOut | None], list[BlockReport], PipelineSummary]: ...

# sessions
class Link:
    def __init__(
        self,
        psk: bytes,
        *,
        sample_bits: int = 1 << 14,
        algorithm: str | None = None,
        frame_bits: int = 1 << 16,
        eps_pe: float = 1e-10,
        eps_sec: float = 1e-10,
        eps_cor: float = 1e-15,
        max_qber: float = 0.11,
        toeplitz: str = "auto",
    ) -> None: ...
    @property
    def auth_available_bits(self) -> int: ...
    @property
    def auth_spent_bits(self) -> int: ...
    def auth_refill(self, key: bytes) -> None: ...

class Session:
    @property
    def block_id(self) -> str: ...
    @property
    def side(self) -> Literal["alice", "bob"]: ...
    def handle(self, message: bytes) -> None: ...
    def poll_transmit(self) -> bytes | None: ...
    @property
    def finished(self) -> bool: ...
    def outcome(self, *, packed: bool = True) -> tuple[BlockReport, KeyOut | None]: ...

class AliceSession(Session):
    def __init__(self, link: Link, block_id: str, raw: KeyIn, *, bits: int | None = None) -> None: ...

class BobSession(Session):
    def __init__(self, link: Link, block_id: str, raw: KeyIn, *, bits: int | None = None) -> None: ...

def block_id_of(message: bytes) -> str: ...

# key store
class Store:
    def __init__(self, path: str | os.PathLike[str]) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Store: ...
    def __exit__(self, *exc: object) -> bool: ...
    def append(
        self,
        link: str,
        block_id: str,
        key: KeyIn,
        *,
        bits: int | None = None,
        qber: float | None = None,
        leaked_bits: int | None = None,
    ) -> BlockInfo: ...
    def allocate(
        self,
        link: str,
        master: str,
        slaves: list[str] = ...,
        count: int = 1,
        size_bits: int = 256,
        *,
        ttl: float = 60.0,
        recipients: list[str] | None = None,
    ) -> list[AllocatedKey]: ...
    def reserve_exact(
        self,
        link: str,
        master: str,
        slaves: list[str],
        keys: list[AllocatedKey],
        recipients: list[str],
        *,
        ttl: float = 60.0,
        actor: str = "peer",
    ) -> None: ...
    def fetch(
        self, key_ids: list[str], recipient: str, *, packed: bool = True
    ) -> list[tuple[str, KeyOut]]: ...
    def destroy(self, key_ids: list[str], actor: str = "python") -> int: ...
    def expire(self, after: float = 0.0) -> int: ...
    def key_info(self, key_id: str) -> Report | None: ...
    def link_status(self, link: str) -> Report: ...
    def status(self) -> Report: ...
    def ledger(self, start: int = 0, limit: int = 1000) -> list[Report]: ...
