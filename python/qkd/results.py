"""The shapes of the dicts qkd returns, as :class:`typing.TypedDict` classes.

Results stay plain dicts at run time, so ``pandas.DataFrame(reports)`` (a list of dicts) and
``pandas.Series(report)`` take them as they are; these classes give type checkers and editors
their keys and value types. Counts are ``int``, rates and times ``float`` (seconds), names
``str``. Keys marked ``NotRequired`` appear only in the case their comment names. The test
suite checks every class against what the functions return.
"""

from typing import Any, NotRequired, TypedDict

__all__ = [
    "AllocatedKey",
    "BlockInfo",
    "BlockReport",
    "BobStats",
    "EntropyReport",
    "KeyMaterial",
    "MinEntropy",
    "PipelineSummary",
    "QberEstimate",
    "ReconcileStats",
    "SecretLength",
    "SimulationReport",
]


class SimulationReport(TypedDict):
    """:func:`qkd.simulate`'s report."""

    bits: int
    errors: int
    qber: float
    model: dict[str, Any]  # kind, and the burst shape for "burst"
    rng: str  # "seeded-chacha20" or "os"
    seed: NotRequired[int]  # with seed=
    chain: NotRequired[dict[str, float]]  # model="burst": the Gilbert-Elliott chain


class QberEstimate(TypedDict):
    """:func:`qkd.estimate.compare_sample` and :func:`qkd.estimate.estimate_qber`."""

    n: int
    k: int
    errors: int
    observed_qber: float
    remaining_bits: int
    eps: float
    bound: str
    qber_upper: float


class BobStats(TypedDict):
    """:attr:`qkd.cascade.Bob.stats`: Bob's counters so far."""

    algorithm: str
    disclosed_bits: int
    bob_parity_bits: int
    speculative_bits: int
    corrected: int
    round_trips: int
    messages: int
    passes: int


class ReconcileStats(BobStats):
    """:func:`qkd.cascade.reconcile`: Bob's counters and the run's."""

    n: int
    qber: float
    efficiency: float
    initial_errors: int
    residual_errors: int
    alice_disclosed_bits: int
    bob_disclosed_bits: int
    bytes_to_alice: int
    bytes_to_bob: int
    elapsed: float


class SecretLength(TypedDict):
    """:func:`qkd.amplify.secret_length` (scalar arguments): the length and every term."""

    bits: int
    raw_bits: float
    asymptotic_bits: float
    eps_smooth: float
    qber_deviation: float
    phase_error_bound: float
    entropy_bits: float
    leak_ec_bits: int
    confirm_cost_bits: float
    secrecy_cost_bits: float
    model: str


class BlockReport(TypedDict):
    """One block of :func:`qkd.pipeline.process` or a session's outcome, flattened: the
    finite-key terms as ``secret_*`` columns, stage times as ``seconds_*``."""

    index: int
    block_id: str
    outcome: str  # "key", "no_key", "discarded", ...
    outcome_reason: str
    raw_bits: int
    sample_bits: int
    sample_errors: int
    qber: float
    qber_upper: float
    qber_tolerated: float | None
    reconciled_bits: int
    leak_alice_bits: int
    leak_bob_bits: int
    efficiency: float | None
    errors_corrected: int
    true_errors: int | None  # known in simulation only
    residual_errors: int | None
    round_trips: int
    messages: int
    confirmed: bool
    confirm_tag_bits: int
    retried_frames: int
    dropped_frames: int
    dropped_frame_bits: int
    auth_bits: int
    final_bits: int
    entropy: str | None  # the entropy verdict on the final key
    seconds_estimate: float
    seconds_reconcile: float
    seconds_confirm: float
    seconds_amplify: float
    seconds_check: float
    # The finite-key terms (SecretLength's), when the block got that far:
    secret_bits: NotRequired[int]
    secret_raw_bits: NotRequired[float]
    secret_asymptotic_bits: NotRequired[float]
    secret_eps_smooth: NotRequired[float]
    secret_qber_deviation: NotRequired[float]
    secret_phase_error_bound: NotRequired[float]
    secret_entropy_bits: NotRequired[float]
    secret_leak_ec_bits: NotRequired[int]
    secret_confirm_cost_bits: NotRequired[float]
    secret_secrecy_cost_bits: NotRequired[float]


class PipelineSummary(TypedDict):
    """:func:`qkd.pipeline.process`'s totals over the run."""

    blocks: int
    blocks_with_key: int
    blocks_discarded: int
    blocks_quarantined: int
    raw_bits: int
    final_bits: int
    auth_bits: int
    secret_fraction: float
    qber_mean: float
    efficiency_mean: float
    efficiency_blocks: int
    raw_bits_per_second: float
    wall_seconds: float
    times: dict[str, float]  # seconds per stage, summed over blocks


class EntropyReport(TypedDict):
    """:func:`qkd.entropy.assess`: the verdict and one dict per check (statistic, threshold,
    outcome)."""

    verdict: str  # "pass", "fail" or "insufficient_data"
    passed: bool
    reasons: list[str]
    n_bytes: int
    false_alarm: float
    false_alarm_per_check: float
    shannon: dict[str, Any]
    min_entropy: dict[str, Any]
    monobit: dict[str, Any]
    runs: dict[str, Any]
    repetition_count: dict[str, Any]
    adaptive_proportion: dict[str, Any]


class MinEntropy(TypedDict):
    """:func:`qkd.entropy.min_entropy` (most common value, SP 800-90B 6.3.1)."""

    samples: int
    max_count: int
    p_max_hat: float
    p_upper: float
    bits_per_sample: float


class BlockInfo(TypedDict):
    """:meth:`qkd.store.Store.append`: the block as stored."""

    link: str
    block_id: str
    len_bits: int
    usable_bits: int
    digest: list[int]  # BLAKE3 of the key, 32 bytes
    qber: float | None
    leaked_bits: int | None


class KeyMaterial(TypedDict):
    """One range of a block that an allocated key is made of."""

    block_id: str
    bit_offset: int
    bit_len: int


class AllocatedKey(TypedDict):
    """:meth:`qkd.store.Store.allocate`: one key, for the peer store's ``reserve_exact``."""

    key_id: str
    size_bits: int
    material: list[KeyMaterial]
