"""Config loading: errors name the key and the line; --set overrides."""

from pathlib import Path

import pytest

from audit_core.base.config import apply_overrides, fingerprint, load_config_text, redact
from audit_core.base.errors import ConfigError

GOOD = """run: {name: x, seed: 1}
target: {plugin: toy}
data:
  members: m
  nonmembers: n
attacks:
  - {plugin: a, params: {t: 100}}
"""


def load(text, overrides=None):
    return load_config_text(text, "audit.yaml", Path("."), overrides)


def test_good_config_and_defaults():
    cfg = load(GOOD).cfg
    assert cfg.run.device == "auto" and cfg.run.executor.plugin == "inprocess"
    assert cfg.attacks[0].key == "a" and cfg.data.mode == "evaluation"


def test_unknown_key_names_key_and_line():
    text = GOOD.replace("  nonmembers: n\n", "  nonmembers: n\n  colour: red\n")
    with pytest.raises(ConfigError, match=r"data\.colour \(audit\.yaml, line 6\): unknown key"):
        load(text)


def test_wrong_type_names_key_and_line():
    with pytest.raises(ConfigError, match=r"run\.seed \(audit\.yaml, line 1\)"):
        load(GOOD.replace("seed: 1", "seed: many"))


def test_out_of_range_value():
    with pytest.raises(ConfigError, match=r"run\.batch_size"):
        load(GOOD.replace("seed: 1", "seed: 1, batch_size: 0"))


def test_broken_yaml_names_line():
    with pytest.raises(ConfigError, match=r"line \d+.*broken YAML"):
        load("run: {name: x\ntarget: [\n")


def test_missing_sections():
    with pytest.raises(ConfigError, match="target.*required key is missing"):
        load("data: {members: a, nonmembers: b}\nattacks: [{plugin: a}]\n")


def test_mixed_modes_rejected():
    with pytest.raises(ConfigError, match="either members/nonmembers"):
        load(GOOD.replace("  members: m\n", "  members: m\n  suspects: s\n"))


def test_duplicate_attack_names():
    with pytest.raises(ConfigError, match="both named 'a'"):
        load(GOOD + "  - {plugin: a}\n")


def test_reserved_attack_name():
    with pytest.raises(ConfigError, match="'combined', which is reserved"):
        load(GOOD + "  - {plugin: b, name: combined}\n")


def test_set_overrides():
    loaded = load(GOOD, ["run.seed=7", "attacks.0.params.t=50", "data.limit=3", "run.name=y"])
    assert loaded.cfg.run.seed == 7
    assert loaded.cfg.attacks[0].params["t"] == 50
    assert loaded.cfg.data.limit == 3


def test_set_override_errors():
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load(GOOD, ["run.seed"])
    with pytest.raises(ConfigError, match="list index"):
        apply_overrides({"attacks": []}, ["attacks.5.plugin=x"])


def test_plugin_params_validated_with_line():
    from pydantic import BaseModel, ConfigDict

    class P(BaseModel):
        model_config = ConfigDict(extra="forbid")
        t: int = 1

    loaded = load(GOOD)
    with pytest.raises(ConfigError, match=r"attacks\[0\]\.params\.t \(audit\.yaml, line 7\)"):
        loaded.validate_params(P, {"t": "x"}, ("attacks", 0, "params"))


def test_fingerprint_ignores_reports_and_batching():
    a = load(GOOD).cfg
    b = load(GOOD + "reports: [{plugin: html-report}]\n", ["run.batch_size=3"]).cfg
    c = load(GOOD, ["run.seed=9"]).cfg
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)


def test_redact_hides_secrets_but_not_env_names():
    out = redact({"target": {"token": "abc", "token_env": "MY_TOKEN", "url": "u"}})
    assert out == {"target": {"token": "***", "token_env": "MY_TOKEN", "url": "u"}}
    # the same rule as audit_core.base.secrets: a tokenizer or max_tokens is not a secret
    out = redact({"target": {"tokenizer": "clip", "max_tokens": 77, "hf_token": "x"}})
    assert out == {"target": {"tokenizer": "clip", "max_tokens": 77, "hf_token": "***"}}


def test_a_union_value_gets_one_message_naming_the_key_not_the_branches():
    """`n: 0` for `n: int >= 1 | "auto"` read `params.n.constrained-int (...): ...; params.n.literal['auto']
    (...): ...` (pydantic's branch tags in the key); now one key, its branches' messages joined."""
    from typing import Literal, Union

    from pydantic import BaseModel, Field, ValidationError

    from audit_core.base.config import format_validation_error

    class P(BaseModel):
        n: Union[int, Literal["auto"]] = Field(10, ge=1)
        m: Union[Literal["auto"], list[int]] = "auto"

    with pytest.raises(ValidationError) as info:
        P.model_validate({"n": 0, "m": 3})
    text = format_validation_error(info.value, {}, "--set", ("params",), model=P)
    assert text.startswith("invalid config: params.n (--set): ")
    assert "constrained-int" not in text and "literal[" not in text and "list[" not in text, text
    assert text.count("params.n (") == 1 and text.count("params.m (") == 1, text
    assert "params.m (--set): Input should be 'auto', or Input should be a valid list" in text, text


def test_a_block_whose_keys_were_set_on_the_command_line_names_those_too():
    """An error about `attacks[0].params` as a whole (an attack's check()) named only the file's
    line, although the offending value came from `--set attacks.0.params.t=5000`."""
    loaded = load(GOOD, ["attacks.0.params.t=5000"])
    assert loaded.where("attacks", 0, "params") == "audit.yaml, line 7; --set attacks.0.params.t=5000"
    assert loaded.where("attacks", 0, "params", "t") == "--set attacks.0.params.t=5000"
    assert load(GOOD).where("attacks", 0, "params") == "audit.yaml, line 7"
