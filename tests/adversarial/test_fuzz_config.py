"""Hypothesis over the config schema (issue 18): random YAML-ish configs and ``--set`` overrides
through the loader and the validator. Every input must end in a validated config or a
ConfigError (the CLI's exit 2), never in any other exception (a traceback). Bounded: a fixed
number of derandomized examples, a few seconds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit_core.base.config import fingerprint, load_config_text
from audit_core.base.errors import ConfigError

FUZZ = settings(max_examples=250, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))

SECTIONS = {
    "run": ["name", "seed", "device", "batch_size", "output", "executor"],
    "target": ["plugin", "model", "token_env", "image_size"],
    "data": ["members", "nonmembers", "suspects", "reference", "dataset", "root", "split", "limit", "on_error",
             "max_pixels", "follow_symlinks"],
    "cache": ["enabled", "dir", "max_bytes"],
    "inference": ["alpha", "calibration_fraction", "combine"],
    "metrics": ["bootstrap"],
}
ATTACK_KEYS = ["plugin", "name", "params", "scorer", "seed_key"]

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "\0", "a\0b", "toy", "builtin:digits/members", "fail", "skip", "classifier", "threshold",
                     "~/x", "..", "/", "-1", "1e309", "MY_TOKEN", "ghp_16C7e42F292c6912E7710c838347Ae178B4a"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=8)


@st.composite
def configs(draw):
    cfg = {}
    for section, keys in SECTIONS.items():
        if draw(st.booleans()):
            picked = draw(st.lists(st.sampled_from(keys + ["bogus"]), max_size=4, unique=True))
            cfg[section] = {k: draw(values) for k in picked} if draw(st.integers(0, 9)) else draw(values)
    if draw(st.booleans()):
        attacks = []
        for _ in range(draw(st.integers(0, 3))):
            picked = draw(st.lists(st.sampled_from(ATTACK_KEYS), max_size=4, unique=True))
            attacks.append({k: draw(values) for k in picked})
        cfg["attacks"] = attacks if draw(st.integers(0, 5)) else draw(values)
    if draw(st.booleans()):
        cfg["reports"] = draw(st.lists(st.dictionaries(st.sampled_from(["plugin", "params", "x"]), values, max_size=2),
                                       max_size=2))
    return cfg


overrides = st.lists(
    st.builds(lambda k, v: f"{k}={v}",
              st.sampled_from(["run.seed", "run.name", "data.limit", "attacks.0.params.n", "attacks.x", "cache.dir",
                               "run", "a..b", "", "attacks.9.plugin", "data.members.x", "metrics"]),
              st.one_of(st.text(max_size=10), st.sampled_from(["-1", "[1, 2", "{a: 1, a: 2}", "&a [*a]", "null"]))),
    max_size=3,
)


def load(text: str, sets: list[str]) -> None:
    try:
        loaded = load_config_text(text, "fuzz.yaml", Path("/nonexistent"), sets)
    except ConfigError as exc:
        assert str(exc) and "Traceback" not in str(exc)
        return
    fingerprint(loaded.cfg)  # what the runner hashes must be computable for any accepted config
    json.dumps(loaded.cfg.model_dump(mode="json"))
    assert loaded.cfg.run.seed >= 0 and "\0" not in loaded.cfg.run.name


@FUZZ
@given(configs(), overrides)
def test_schema_shaped_configs(cfg, sets):
    load(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), sets)


TOKENS = ["run", "data", "attacks", "target", ":", " ", "  ", "\n", "- ", "{", "}", "[", "]", ",", "&a ", "*a", "&b ",
          "*b", "<<: ", "!!python/object:os.system ", "!!binary ", "!!str ", "? ", '"\\0"', "'", '"', "#", "---\n",
          "...\n", "1", "-1", "1e400", ".nan", "null", "yes", "\t", "%YAML 1.1\n", "|\n", ">\n", "\\", "\ufeff", "é"]


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_yaml_ish_text(tokens):
    load("".join(tokens), [])


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text(text):
    load(text, [])


def test_the_fuzzers_reach_valid_configs():
    """Not every example may be an error: a known-good config must load (the fuzz is not vacuous)."""
    good = {"target": {"plugin": "toy"}, "data": {"members": "a", "nonmembers": "b"}, "attacks": [{"plugin": "x"}]}
    loaded = load_config_text(yaml.safe_dump(good), "ok.yaml", Path("/nonexistent"), ["run.seed=4"])
    assert loaded.cfg.run.seed == 4 and not math.isnan(loaded.cfg.inference.alpha)
