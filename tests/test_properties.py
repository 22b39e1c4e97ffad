"""One test per stated property, asserting the property itself (issue 25: hand-made mutants that
broke these survived the behaviour tests, or died only by accident).

- per-image seeds depend on each of (run seed, attack seed key, image id, draw), and two
  identical images with different ids get different noise and different scores;
- every bootstrap resample keeps the class sizes (stratified);
- an ROC point exactly at the FPR level counts for TPR@FPR (``<=``, not ``<``);
- every strict config section refuses unknown keys (generated from the models);
- every documented form of a secret is scrubbed;
- Hypothesis: the metrics against brute force, seeding and batching invariance.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from audit_core import seeding
from audit_core.stats import metrics
from audit_core.base import secrets
from audit_core.plugin.attacks import Batch
from audit_core.base.config import AuditConfig, PluginRef, load_config_text
from audit_core.base.errors import ConfigError
from audit_core.testing import ToyParams, ToyTarget, make_attack, make_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ================================================================================ seeding
BASE = dict(run_seed=7, attack_key="naive-loss", image_id="img0", draw=0)
CHANGES = {"run_seed": 8, "attack_key": "pia", "image_id": "img1", "draw": 1}


@pytest.mark.parametrize("part", sorted(CHANGES))
def test_seed_depends_on_each_part(part):
    """Changing any one of (run seed, attack key, image id, draw) changes the seed."""
    changed = {**BASE, part: CHANGES[part]}
    assert seeding.derive_seed(**changed) != seeding.derive_seed(**BASE)
    assert seeding.derive_seed(**BASE) == seeding.derive_seed(**dict(BASE))  # and nothing else


def test_batch_seeds_differ_per_image_and_per_draw():
    """Within a batch every (image, draw) has its own seed: no two rows share noise."""
    batch = make_batch(4, run_seed=3, seed_key="a")
    n = 3
    rows = batch.seed_matrix(n)
    assert len(set(rows)) == len(rows) == 4 * n
    for d in range(n):
        assert batch.seeds(d) == [seeding.derive_seed(3, "a", i, d) for i in batch.ids]
        assert rows[d::n] == batch.seeds(d)  # image-major: draw d of image i at row i*n + d


def test_identical_images_with_different_ids_get_different_noise_and_scores():
    """The independence the statistics rely on: the same pixels under two ids are two
    independent draws (different variations, different naive-loss scores); under the same id in
    another batch, the same draw (identical score)."""
    from audit_naive_loss import NaiveLoss

    target = ToyTarget(ToyParams())
    img = make_batch(1).images
    twins = Batch(images=img.repeat(2, 1, 1, 1), ids=["a", "b"], captions=[None, None], run_seed=1, seed_key="naive-loss")
    alone = Batch(images=img, ids=["b"], captions=[None], run_seed=1, seed_key="naive-loss")
    attack = make_attack(NaiveLoss, target, run_seed=1, t=100, draws=2)
    s = attack.score(twins).scores
    assert s[0] != s[1]
    assert attack.score(alone).scores[0] == s[1]

    v = target.variation(twins.images, 100, 10, twins.seeds(0))
    assert not torch.equal(v[0], v[1])
    np.testing.assert_array_equal(target.variation(alone.images, 100, 10, alone.seeds(0))[0].numpy(), v[1].numpy())


def test_attack_name_and_run_seed_change_the_scores():
    from audit_naive_loss import NaiveLoss

    target = ToyTarget(ToyParams())
    batch = make_batch(2)
    base = make_attack(NaiveLoss, target, name="x", run_seed=1, t=100)
    ctx_batch = lambda key, seed: Batch(batch.images, batch.ids, batch.captions, run_seed=seed, seed_key=key)  # noqa: E731
    s = base.score(ctx_batch("x", 1)).scores
    assert not torch.equal(s, base.score(ctx_batch("y", 1)).scores)
    assert not torch.equal(s, base.score(ctx_batch("x", 2)).scores)
    torch.testing.assert_close(s, base.score(ctx_batch("x", 1)).scores, rtol=0, atol=0)


def test_seed_formula_is_pinned():
    """The documented derivation, by hand: blake2b-64 (big-endian) of
    ``run_seed \\x1f attack_key \\x1f image_id \\x1f draw``, top 63 bits. Pinned: changing it changes
    every score and every query-cache key."""
    import hashlib

    text = "7\x1fnaive-loss\x1fimg0\x1f0"
    want = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1
    assert seeding.derive_seed(7, "naive-loss", "img0", 0) == want == 562962930794402219
    assert seeding.derive_seed(7, "naive-loss", "img0") == want  # draw defaults to 0
    assert seeding.hash_seed("") == 8238016292129134938


def test_randn_dtype_device_and_default_dtype():
    """Draws are float32 on the CPU whatever torch's default dtype, then cast and moved."""
    ref = seeding.randn((2, 2), [5, 6])
    assert ref.dtype == torch.float32 and ref.device.type == "cpu"
    g = torch.Generator().manual_seed(5)
    torch.testing.assert_close(ref[0], torch.randn((2, 2), generator=g, dtype=torch.float32), rtol=0, atol=0)
    assert seeding.randn((2, 2), [5, 6], dtype=torch.float64).dtype == torch.float64
    assert seeding.randn((2, 2), [5, 6], device="meta").device.type == "meta"
    # 64 values: torch draws fewer than 16 through a double path whatever the dtype, more through
    # a dtype-specific one, so only a larger shape tells a float32 draw from a float64 one
    big = seeding.randn((1, 8, 8), [5, 6])
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.testing.assert_close(seeding.randn((2, 2), [5, 6]), ref, rtol=0, atol=0)
        torch.testing.assert_close(seeding.randn((1, 8, 8), [5, 6]), big, rtol=0, atol=0)
    finally:
        torch.set_default_dtype(old)


ids = st.lists(st.text("abcxyz0123_", min_size=1, max_size=6), min_size=1, max_size=6, unique=True)


@FAST
@given(ids=ids, split=st.integers(0, 6), run_seed=st.integers(0, 2**31), n=st.integers(1, 3))
def test_seeds_do_not_depend_on_batching(ids, split, run_seed, n):
    """A batch's seeds are its images' seeds: splitting the batch anywhere changes nothing."""
    def batch(some):
        return Batch(torch.zeros(len(some), 1, 2, 2), list(some), [None] * len(some), run_seed=run_seed, seed_key="k")

    k = min(split, len(ids))
    whole = batch(ids)
    assert whole.seed_matrix(n) == batch(ids[:k]).seed_matrix(n) + batch(ids[k:]).seed_matrix(n)
    assert whole.seed_matrix(n + 1)[:: n + 1] == whole.seeds(0)  # more draws keep the first ones
    assert len(set(whole.seed_matrix(n))) == len(ids) * n


@FAST
@given(seeds=st.lists(st.integers(0, 2**63 - 1), min_size=1, max_size=5))
def test_randn_rows_do_not_depend_on_the_batch(seeds):
    """Row i of ``randn(shape, seeds)`` is what ``seeds[i]`` alone draws; 0 <= seed < 2**63."""
    stack = seeding.randn((1, 3, 3), seeds)
    for i, s in enumerate(seeds):
        torch.testing.assert_close(stack[i], seeding.randn((1, 3, 3), [s])[0], rtol=0, atol=0)


@FAST
@given(run_seed=st.integers(-(2**40), 2**40), key=st.text(max_size=8), image_id=st.text(max_size=8), draw=st.integers(0, 1000))
def test_seed_range(run_seed, key, image_id, draw):
    s = seeding.derive_seed(run_seed, key, image_id, draw)
    assert 0 <= s < 2**seeding.SEED_BITS
    assert s == seeding.derive_seed(run_seed, key, image_id, draw)


# ================================================================================ metrics
def test_tpr_at_fpr_counts_a_point_exactly_at_the_level():
    """100 non-members: one above 2 of the members puts the ROC point (FPR 1 %, TPR 0.5) exactly
    at the level; TPR@1%FPR is 0.5 (<=), not 0.3 (the last point strictly below)."""
    neg = np.arange(100.0)
    pos = np.array([200.0] * 3 + [98.5] * 2 + [-1.0] * 5)
    scores = np.r_[pos, neg]
    labels = np.r_[np.ones(10, int), np.zeros(100, int)]
    assert metrics.point_metrics(scores, labels)["tpr_at_1pct_fpr"] == 0.5
    fpr, tpr, _ = metrics.roc(scores, labels)
    assert metrics.tpr_at_fpr(fpr, tpr, 0.01) == 0.5
    assert metrics.tpr_at_fpr(fpr, tpr, 0.0099) == 0.3
    assert metrics.compute(scores, labels, bootstrap=0)["tpr_at_1pct_fpr"]["value"] == 0.5


def test_tpr_at_0_1pct_fpr_counts_a_point_exactly_at_the_level():
    neg = np.arange(1000.0)
    pos = np.array([5000.0] * 2 + [998.5] * 2)
    scores, labels = np.r_[pos, neg], np.r_[np.ones(4, int), np.zeros(1000, int)]
    assert metrics.point_metrics(scores, labels)["tpr_at_0_1pct_fpr"] == 1.0


def brute_force(scores, labels) -> dict[str, float]:
    """The metrics by definition: AUC as P(member > non-member) + P(tie) / 2 over all pairs;
    ASR and TPR@FPR over every threshold 'member when score >= thr' (and none)."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    auc = sum((p > q) + 0.5 * (p == q) for p, q in itertools.product(pos, neg)) / (len(pos) * len(neg))
    points = [(0.0, 0.0)] + [
        (sum(q >= thr for q in neg) / len(neg), sum(p >= thr for p in pos) / len(pos)) for thr in set(scores)
    ]
    out = {"auc": auc, "asr": max(1 - (f + 1 - t) / 2 for f, t in points)}
    for key, level in metrics.LEVELS.items():
        out[key] = max(t for f, t in points if f <= level)
    return out


scores_labels = st.integers(2, 24).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(-4, 4).map(float) | st.floats(-1e3, 1e3), min_size=n, max_size=n),
        st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda y: 0 < sum(y) < len(y)),
    )
)


@FAST
@given(scores_labels)
def test_point_metrics_match_brute_force(data):
    scores, labels = data
    got = metrics.point_metrics(np.array(scores), np.array(labels))
    want = brute_force(scores, labels)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


@FAST
@given(st.integers(0, 7), st.integers(1, 300))
def test_tpr_at_fpr_with_many_nonmembers(n_above, n_neg):
    """With n_neg non-members, exactly n_above of them above every member: TPR@level is 1 when
    n_above / n_neg <= level and 0 otherwise (the boundary included)."""
    n_above = min(n_above, n_neg)
    scores = np.r_[np.full(3, 10.0), np.full(n_above, 20.0), np.zeros(n_neg - n_above)]
    labels = np.r_[np.ones(3, int), np.zeros(n_neg, int)]
    got = metrics.point_metrics(scores, labels)
    for key, level in metrics.LEVELS.items():
        assert got[key] == (1.0 if n_above / n_neg <= level else 0.0)


# ---------------------------------------------------------------------- bootstrap stratified
def test_every_bootstrap_resample_keeps_the_class_sizes():
    """With one resample (n=1) the interval is that resample's metrics. 5 members and 7
    non-members with distinct scores: a resample with 5 + 7 draws has AUC on the 1/35 grid, ASR
    on the 1/70 grid and TPR on the 1/5 grid; a resample whose class sizes moved leaves them
    (1/11, 1/24, 1/4...) for some of the 150 seeds."""
    rng = np.random.default_rng(0)
    scores = rng.normal(size=12) + np.r_[np.full(5, 0.5), np.zeros(7)]
    labels = np.r_[np.ones(5, int), np.zeros(7, int)]
    for seed in range(150):
        ci = metrics.bootstrap_ci(scores, labels, n=1, seed=seed)
        for key, grid in (("auc", 35), ("asr", 70), ("tpr_at_1pct_fpr", 5), ("tpr_at_0_1pct_fpr", 5)):
            lo, hi = ci[key]
            assert lo == hi
            assert abs(lo * grid - round(lo * grid)) < 1e-9, (seed, key, lo)


def test_bootstrap_draws_members_and_nonmembers_separately():
    """The documented scheme, reproduced with the same seeded generator: per resample
    ``choice(members, n_members)`` then ``choice(nonmembers, n_nonmembers)``, percentile
    2.5 / 97.5 of each metric."""
    rng = np.random.default_rng(1)
    scores = rng.normal(size=9)
    labels = np.r_[np.ones(3, int), np.zeros(6, int)]
    got = metrics.bootstrap_ci(scores, labels, n=50, seed=4)
    gen = np.random.default_rng(4)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    draws: dict[str, list[float]] = {}
    for _ in range(50):
        idx = np.concatenate([gen.choice(pos, len(pos)), gen.choice(neg, len(neg))])
        for k, v in brute_force(list(scores[idx]), list(labels[idx])).items():
            draws.setdefault(k, []).append(v)
    for k, v in draws.items():
        np.testing.assert_allclose(got[k], [np.percentile(v, 2.5), np.percentile(v, 97.5)], atol=1e-12)


@pytest.mark.parametrize("n_pos, n_neg", [(1, 9), (9, 1), (1, 1)])
def test_bootstrap_with_a_tiny_class_is_finite(n_pos, n_neg):
    """One member (or one non-member): every resample still has both classes, no NaN, no crash."""
    scores = np.linspace(0, 1, n_pos + n_neg)
    labels = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    out = metrics.compute(scores, labels, bootstrap=50, seed=0)
    for entry in out.values():
        assert np.all(np.isfinite(entry["ci95"])) and entry["ci95"][0] <= entry["value"] <= entry["ci95"][1] + 1e-12


# ================================================================================ config
def _models(tp) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for a in typing.get_args(tp) for m in _models(a)]


def _sections(model: type[BaseModel], path: tuple = ()) -> list[tuple[tuple, type[BaseModel], bool]]:
    """Every (path, model, is-a-list-item) reachable from the config model."""
    out = []
    for name, field in model.model_fields.items():
        for sub in _models(field.annotation):
            is_list = typing.get_origin(field.annotation) is list
            out.append(((*path, name), sub, is_list))
            out += _sections(sub, (*path, name, 0) if is_list else (*path, name))
    return out


#: sections whose extra keys belong to a plugin (validated by the plugin's own Params)
PLUGIN_SECTIONS = {("target",), ("run", "executor")}
SECTIONS = [(p, m, lst) for p, m, lst in _sections(AuditConfig)]
GOOD = {
    "target": {"plugin": "toy"},
    "data": {"members": "m", "nonmembers": "n"},
    "attacks": [{"plugin": "naive-loss"}],
    "reports": [{"plugin": "html"}],
}


def test_every_section_is_strict_or_a_plugin_reference():
    """A new section is either strict or listed here as one a plugin validates."""
    assert {p for p, _, _ in SECTIONS} >= {("run",), ("data",), ("cache",), ("inference",), ("metrics",), ("attacks",), ("reports",)}
    for path, model, _ in SECTIONS:
        if issubclass(model, PluginRef):
            assert path in PLUGIN_SECTIONS, f"{path} accepts any key: validate it or list it in PLUGIN_SECTIONS"
        else:
            assert model.model_config.get("extra") == "forbid", f"{'.'.join(map(str, path))} accepts unknown keys"


@pytest.mark.parametrize("path", [p for p, m, _ in SECTIONS if p not in PLUGIN_SECTIONS], ids=lambda p: ".".join(map(str, p)))
def test_every_config_section_refuses_unknown_keys(path, tmp_path):
    import copy
    import yaml

    raw = copy.deepcopy(GOOD)
    node = raw
    for part in path:
        if isinstance(part, int):
            continue  # the list's first item was entered with the list
        node = node.setdefault(part, {})
        if isinstance(node, list):
            node = node[0]
    node["colourz"] = 1
    text = yaml.safe_dump(raw, sort_keys=False)
    load_config_text(yaml.safe_dump(GOOD, sort_keys=False), "audit.yaml", tmp_path)  # the base is valid
    with pytest.raises(ConfigError, match=r"colourz.*unknown key"):
        load_config_text(text, "audit.yaml", tmp_path)


# ================================================================================ secrets
@pytest.fixture
def registry():
    secrets.forget_all()
    yield secrets
    secrets.forget_all()


SECRET = "tok_9f8e7d6c5b"


@pytest.mark.parametrize("form", [SECRET, f"  {SECRET}\n", f"{SECRET}\n", f"\t{SECRET} "], ids=["raw", "padded", "newline", "tabbed"])
def test_every_form_of_a_registered_secret_is_scrubbed(registry, form):
    """A secret registered with surrounding whitespace (an env var read from a file, a pasted
    token) is scrubbed both as given and whitespace-stripped."""
    registry.register(form)
    for text in (f"header {SECRET} tail", f"x{form}y", f'{{"k": "{SECRET}"}}'):
        assert SECRET not in registry.scrub(text)
        assert "***" in registry.scrub(text)


def test_secret_from_env_with_whitespace_is_scrubbed_everywhere(registry, monkeypatch, tmp_path):
    monkeypatch.setenv("MY_TEST_TOKEN", f" {SECRET}\n")
    assert registry.from_env("MY_TEST_TOKEN") == f" {SECRET}\n"
    assert registry.scrub_obj({SECRET: [f"Bearer {SECRET}", 3]}) == {"***": ["Bearer ***", 3]}
    (tmp_path / "a.json").write_text(f'{{"auth": "{SECRET}"}}')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "log.txt").write_text(f"{SECRET}\n")
    changed, binary = registry.scrub_tree(tmp_path)
    assert len(changed) == 2 and not binary
    for p in (tmp_path / "a.json", tmp_path / "sub" / "log.txt"):
        assert SECRET not in p.read_text()


def test_config_secrets_are_registered(registry, monkeypatch):
    """``*_env`` keys register the variable's value; literal secret-looking keys their value;
    lists and nesting included; ordinary keys (tokenizer, seed_key) not."""
    monkeypatch.setenv("API_TOKEN_VAR", "envsecret-123")
    registry.register_config({
        "target": {"plugin": "http", "token_env": "API_TOKEN_VAR", "headers": [{"api_key": " lit-key-456 "}]},
        "attacks": [{"tokenizer": "clip-tokenizer", "seed_key": "abcd"}],
    })
    got = registry.registered()
    assert {"envsecret-123", " lit-key-456 ", "lit-key-456"} <= got
    assert "clip-tokenizer" not in got and "abcd" not in got and "API_TOKEN_VAR" not in got


@pytest.mark.parametrize("key", ["token", "hf_token", "HF-TOKEN", "api_key", "api_key_env", "password", "auth_header",
                                 "client_secret", "aws_secret_access_key", "private_key_path", "bearer", "cookie", "pwd"])
def test_secret_looking_keys(key):
    assert secrets.is_secret_key(key)


@pytest.mark.parametrize("key", ["tokenizer", "max_tokens", "seed_key", "keyword", "author", "passage", "name"])
def test_ordinary_keys_are_not_secret(key):
    assert not secrets.is_secret_key(key)


def test_redact_masks_literal_secrets_and_keeps_env_names():
    raw = {"target": {"token": "abc", "token_env": "HF", "max_tokens": 3, "empty_token": "",
                      "headers": [{"api_key": "k1"}, {"x": 1}]}}
    assert secrets.redact(raw) == {"target": {"token": "***", "token_env": "HF", "max_tokens": 3, "empty_token": "",
                                              "headers": [{"api_key": "***"}, {"x": 1}]}}


def test_from_env_errors_name_the_key_and_variable(registry, monkeypatch):
    monkeypatch.delenv("NOT_SET_TOKEN_X", raising=False)
    with pytest.raises(ConfigError, match=r"target\.token_env: the environment variable NOT_SET_TOKEN_X is not set"):
        registry.from_env("NOT_SET_TOKEN_X", "target.token_env")
    with pytest.raises(ConfigError, match=r"target\.token_env: the value given \(10 characters, not shown\) is not an environment variable name") as e:
        registry.from_env("hf_abc def", "target.token_env")
    assert "hf_abc" not in str(e.value) and registry.registered() == {"hf_abc def"}  # never echoed, scrubbed later
    registry.forget_all()
    with pytest.raises(ConfigError, match=r"^target\.token_env: name the environment variable"):
        registry.from_env("", "target.token_env")
    assert registry.from_env(None, required=False) is None
    assert registry.from_env("NOT_SET_TOKEN_X", required=False) is None
    assert registry.registered() == frozenset()


def test_scrub_tree_leaves_binary_files_and_clean_files(registry, tmp_path):
    registry.register(SECRET)
    (tmp_path / "clean.txt").write_text("nothing here")
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01" + SECRET.encode())
    (tmp_path / ".hidden").write_text(SECRET)
    (tmp_path / "big.txt").write_text(SECRET + "x" * 100)
    changed, binary = registry.scrub_tree(tmp_path, max_bytes=50)
    assert changed == [tmp_path / ".hidden"] and binary == [tmp_path / "blob.bin"]
    assert (tmp_path / ".hidden").read_text() == "***" and SECRET in (tmp_path / "big.txt").read_text()
    assert (tmp_path / "blob.bin").read_bytes().endswith(SECRET.encode())
    assert not list(tmp_path.glob(".*.scrub"))


def test_scrub_edges(registry, tmp_path):
    """Non-strings pass through; a secret inside a longer one is masked after it, whatever their
    alphabetical order; a file of exactly ``max_bytes`` is scrubbed; a file that is not UTF-8 is
    left whole (reported as binary); a symlink is never followed nor replaced."""
    registry.register("tokn")
    registry.register("my-tokn-long")
    assert registry.scrub(None) is None and registry.scrub(3) == 3
    assert registry.scrub("a my-tokn-long b tokn") == "a *** b ***"
    assert registry.scrub_obj({1: "tokn", "k": ("tokn", None)}) == {1: "***", "k": ["***", None]}
    (tmp_path / "run").mkdir()
    exact = tmp_path / "run" / "exact.txt"
    exact.write_text("tokn" + "x" * 6)
    bad = tmp_path / "run" / "latin1.txt"
    bad.write_bytes(b"\xff\xfe tokn")
    outside = tmp_path / "outside.txt"
    outside.write_text("tokn")
    (tmp_path / "run" / "link.txt").symlink_to(outside)
    changed, binary = registry.scrub_tree(tmp_path / "run", max_bytes=10)
    assert changed == [exact] and binary == [bad]
    assert exact.read_text() == "***xxxxxx" and bad.read_bytes() == b"\xff\xfe tokn"
    assert (tmp_path / "run" / "link.txt").is_symlink() and outside.read_text() == "tokn"


def test_from_env_default_key_in_the_message(registry):
    with pytest.raises(ConfigError, match=r"^token_env: name the environment variable"):
        registry.from_env(None)


def test_nothing_registered_changes_nothing(registry, tmp_path):
    (tmp_path / "a.txt").write_text(SECRET)
    assert registry.scrub(SECRET) == SECRET and registry.scrub_obj({SECRET: SECRET}) == {SECRET: SECRET}
    assert registry.scrub_tree(tmp_path) == ([], [])


def test_short_values_are_not_registered(registry):
    registry.register("abc")
    registry.register("  ab  ")
    assert registry.registered() == frozenset()
    registry.register("abcd")
    assert registry.scrub("x abcd y") == "x *** y"


def test_longest_secret_is_scrubbed_first(registry):
    """One secret containing another: the longer goes whole (no half-masked remainder)."""
    registry.register("abcd")
    registry.register("abcdefgh")
    assert registry.scrub("abcdefgh") == "***"


@pytest.mark.parametrize("name,secret", [
    ("MY_TOKEN", False), ("HF_TOKEN", False), ("OPENAI_API_KEY_2024", False),
    (12345, False), (None, False),  # not a string: nothing to echo
    ("has space", True), ("1STARTS_WITH_DIGIT", True), ("sk-abc", True),  # not a variable name
    ("ghp_abcdefgh", True), ("ghp_abcdefg", False),  # a token prefix from 12 characters
    ("hf_Abcdefghij", True), ("AKIAABCDEFGH", True), ("xoxBOTTOKEN1", True),
    ("ABCDEFGHIJKLM123", True), ("ABCDEFGHIJKL123", False),  # 16+ characters with 3+ digits, no _
    ("ABCDEFGHIJKLMN12", False),  # only 2 digits
    ("ABCDEFGHIJ_LM123", False), ("abcdefghij_lm123", False),  # one case with _: a variable name
    ("AbcdefghiJ_LM123", True),  # mixed case with digits: a token, even with _
])
def test_looks_like_secret_by_the_documented_rule(name, secret):
    assert secrets.looks_like_secret(name) is secret


@pytest.mark.parametrize("key", ["token_env", "secret_env", "hf_token_env", "bearer_env", "client_secret_env"])
def test_env_keys_of_secrets_are_secret_keys(key):
    assert secrets.is_secret_key(key) and secrets.is_secret_key(key.upper())
    assert not secrets.is_secret_key(key.replace("secret", "model").replace("token", "model").replace("bearer", "model"))


def test_a_secret_pasted_where_its_variable_name_belongs_is_registered_and_masked(registry, monkeypatch):
    pasted = "ghp_abcdefghijklmnop"
    assert secrets.redact({"token_env": pasted, "api_key_env": "HF_TOKEN"}) == {"token_env": "***", "api_key_env": "HF_TOKEN"}
    monkeypatch.setenv("MY_MODEL_VAR", "not-a-secret-value")
    monkeypatch.setenv("MY_SECRET_VAR", "a-secret-value")
    registry.register_config({"token_env": pasted, "model_env": "MY_MODEL_VAR", "password_env": "MY_SECRET_VAR",
                              "token": ["not", "a string"], "nested": {"auth": 1234567}})
    assert registry.registered() == {pasted, "a-secret-value"}


def test_from_env_refuses_a_non_string_name_without_echoing_it(registry):
    with pytest.raises(ConfigError, match=r"^token_env: the value given \(0 characters, not shown\) is not an environment variable name"):
        registry.from_env(123456789)


def test_scrub_files_goes_on_after_a_skipped_path(registry, tmp_path):
    """Folders, missing files and paths that cannot be read are skipped, not the end of the list;
    a scrubbed file is written back as UTF-8."""
    registry.register(SECRET)
    (tmp_path / "d").mkdir()
    target = tmp_path / "later.txt"
    target.write_text(f"é {SECRET}", encoding="utf-8")
    unreadable = tmp_path / ("x" * 300)  # a name too long to stat: OSError, skipped
    changed, binary = registry.scrub_files([tmp_path / "d", tmp_path / "missing.txt", unreadable, target])
    assert changed == [target] and binary == []
    assert target.read_bytes() == "é ***".encode("utf-8")


# ================================================================================ query cache
def test_test_query_cache_is_fresh_for_this_session():
    """The tests never read a query cache left by an earlier run: AUDIT_CACHE_DIR is a
    temporary folder created for this session (no stale stored variations)."""
    d = Path(os.environ["AUDIT_CACHE_DIR"]).resolve()
    assert d.is_relative_to(Path(tempfile.gettempdir()).resolve())
    assert "test-queries-" in d.name and ".pytest_cache" not in d.parts
