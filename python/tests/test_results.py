"""qkd.results describes the dicts the functions return: the keys and value types must match
(a TypedDict that drifted from the engine would mislead every type checker), and the results
convert to pandas as they are."""

import types
import typing

import numpy as np
import pandas as pd
import pytest

import qkd
from qkd import amplify, cascade, entropy, estimate, pipeline, results, store


def simple_types(annotation):
    """The Python types a value of `annotation` may have, or None when not checked here."""
    if typing.get_origin(annotation) in (typing.NotRequired, typing.Required):
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        parts = [simple_types(a) for a in typing.get_args(annotation)]
        return None if None in parts else tuple(t for p in parts for t in p)
    if annotation is type(None):
        return (type(None),)
    if annotation is float:
        return (float, int)
    if annotation in (int, str, bool):
        return (annotation,)
    if origin in (dict, list):
        return (origin,)
    return None


def conforms(value: dict, shape) -> None:
    hints = typing.get_type_hints(shape, include_extras=True)
    missing = shape.__required_keys__ - value.keys()
    extra = value.keys() - hints.keys()
    assert not missing and not extra, f"{shape.__name__}: missing {missing}, unexpected {extra}"
    for key, v in value.items():
        allowed = simple_types(hints[key])
        if allowed is not None:
            assert isinstance(v, allowed) and not (
                isinstance(v, bool) and bool not in allowed
            ), f"{shape.__name__}.{key} = {v!r} is not {hints[key]}"


@pytest.fixture(scope="module")
def pair():
    a, b, report = qkd.simulate(1 << 17, 0.03, seed=11)
    return a, b, report


def test_simulation_and_estimation(pair):
    a, b, report = pair
    conforms(report, results.SimulationReport)
    conforms(qkd.simulate(4096, 0.05, "burst")[2], results.SimulationReport)
    est, _, _ = estimate.estimate_qber(a, b, 4096)
    conforms(est, results.QberEstimate)


def test_cascade(pair):
    a, b, _ = pair
    _, stats = cascade.reconcile(a, b, qber=0.03)
    conforms(stats, results.ReconcileStats)
    conforms(cascade.Bob(b, 0.03).stats, results.BobStats)


def test_pipeline_reports_with_and_without_key_convert_to_pandas(pair):
    a, b, _ = pair
    noisy, noisier, _ = qkd.simulate(1 << 16, 0.2, seed=1)
    _, good, summary = pipeline.process(a, b, block_bits=1 << 16, sample_bits=1 << 12)
    _, bad, _ = pipeline.process(noisy, noisier, block_bits=1 << 16, sample_bits=1 << 12)
    assert bad[0]["outcome"] == "discarded" and "secret_bits" not in bad[0]
    for r in good + bad:
        conforms(r, results.BlockReport)
    conforms(summary, results.PipelineSummary)
    frame = pd.DataFrame(good + bad)
    assert list(frame["outcome"]) == ["key", "key", "discarded"]
    assert frame["final_bits"].sum() == summary["final_bits"]
    assert frame["secret_bits"].isna().tolist() == [False, False, True]
    assert pd.Series(summary)["blocks"] == 2


def test_amplify_and_entropy(pair):
    conforms(amplify.secret_length(100000, 10000, 0.03, 20000), results.SecretLength)
    key = np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8)
    conforms(entropy.assess(key), results.EntropyReport)
    conforms(entropy.min_entropy(key), results.MinEntropy)


def test_store(pair, tmp_path):
    a, _, _ = pair
    with store.Store(tmp_path / "s") as st:
        conforms(st.append("L", "b", a, qber=0.03), results.BlockInfo)
        conforms(st.append("L", "c", a), results.BlockInfo)
        for key in st.allocate("L", "M", ["S"], 2, 256):
            conforms(key, results.AllocatedKey)
            for part in key["material"]:
                conforms(part, results.KeyMaterial)
