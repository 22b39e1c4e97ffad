"""The YAML loader (issue 18): duplicate keys silently kept the last one (a duplicated `data:`
swapped members and non-members); an 800-byte alias bomb took 13-100 s and 2.6-13 GB in the
line mapping. And a secret pasted where an environment-variable name belongs was echoed."""

from __future__ import annotations

import textwrap
import tracemalloc

import pytest

from audit_core.base import secrets
from audit_core.base.config import MAX_YAML_NODES, load_config_text, load_yaml, parse_value
from audit_core.base.errors import ConfigError


def yaml_config(toy, text: str):
    p = toy.members.parent / "dup.yaml"
    p.write_text(textwrap.dedent(text).format(m=toy.members, n=toy.nonmembers), encoding="utf-8")
    return p


def test_duplicated_data_section_names_both_lines(toy, refuse):
    cfg = yaml_config(toy, """\
        run: {{name: toy, seed: 3, device: cpu}}
        target: {{plugin: toy}}
        data: {{members: {m}, nonmembers: {n}}}
        attacks: [{{plugin: variation-similarity, params: {{t: 100, k: 50, n: 2}}}}]
        cache: {{enabled: false}}
        data: {{members: {n}, nonmembers: {m}}}
        """)
    msg = refuse(cfg)
    assert f"{cfg}, lines 3 and 6: duplicate key 'data'" in msg


def test_nested_duplicate_key():
    with pytest.raises(ConfigError, match=r"lines 2 and 4: duplicate key 'data.members'"):
        load_yaml("data:\n  members: a\n  nonmembers: b\n  members: c\n", "x.yaml")


def test_merge_keys_still_work():
    data, lines = load_yaml("base: &b {t: 1, k: 2}\nrun: {<<: *b, k: 3}\n", "x.yaml")
    assert data["run"] == {"t": 1, "k": 3} and lines[("run", "k")] == 2


BOMB = "\n".join(
    [f'a0: &a0 [{",".join(["lol"] * 9)}]']
    + [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    + ["run: {name: x}"]
)


def test_alias_bomb_fails_fast_and_small():
    assert len(BOMB) < 800  # 9**9 = 387 million strings once expanded
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match=f"aliases expand to more than {MAX_YAML_NODES} YAML nodes"):
            load_config_text(BOMB, "bomb.yaml", base_dir=None)
        peak = tracemalloc.get_traced_memory()[1]
        print(f"alias bomb: peak {peak / 1e6:.1f} MB")
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20  # bytes; before: gigabytes (the line map expanded every alias)


def test_alias_bomb_through_the_cli(tmp_path, audit_cli):
    p = tmp_path / "bomb.yaml"
    p.write_text(BOMB)
    code, output = audit_cli("run", p, "--output", tmp_path / "out")
    assert code == 2 and "alias bomb" in output and not (tmp_path / "out").exists()


def test_alias_bomb_in_a_set_value():
    with pytest.raises(ConfigError, match="aliases expand"):
        parse_value(BOMB.replace("\n", ", ").join("{}"))


def test_recursive_alias():
    with pytest.raises(ConfigError, match="recursive YAML alias"):
        load_yaml("a: &x [1, *x]\n", "x.yaml")


@pytest.mark.parametrize("depth", [3000, 100_000])
def test_deep_nesting_is_refused_before_parsing(depth):
    # before: PyYAML's scanner is quadratic in the depth (3000 levels: seconds), then a RecursionError traceback
    with pytest.raises(ConfigError, match="line 2: brackets nested deeper than 100 levels"):
        load_yaml("run: {}\na: " + "[" * depth + "]" * depth, "x.yaml")


def test_deep_block_nesting_is_a_config_error():
    text = "".join(" " * i + f"k{i}:\n" for i in range(1200)) + " " * 1200 + "v: 1\n"
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_yaml(text, "x.yaml")


def test_brackets_in_quotes_and_comments_do_not_count():
    data, _ = load_yaml("a: '" + "[" * 200 + "'  # " + "{" * 200 + '\nb: "' + "[" * 200 + '"\n', "x.yaml")
    assert data["a"] == "[" * 200 and data["b"] == "[" * 200


# ------------------------------------------------------------------------------ secrets
@pytest.mark.parametrize(
    "pasted",
    ["ghp_16C7e42F292c6912E7710c838347Ae178B4a",  # a valid identifier: before, "ghp_... is not set" echoed it
     "sk-live/abcDEF123==",  # not an identifier: before, quoted in the error
     "hf_AbCdEfGhIjKlMnOpQrStUvWxYz123456"],
)
def test_secret_pasted_as_token_env_is_never_echoed(pasted, toy, refuse, toy_slow):
    msg = refuse(toy(target={"plugin": "toy-slow", "token_env": pasted}))
    assert "target.token_env" in msg and "not shown" in msg and "not an environment variable name" in msg
    assert pasted not in msg and pasted[:8] not in msg


def test_from_env_and_redaction():
    with pytest.raises(ConfigError) as err:
        secrets.from_env("ghp_16C7e42F292c6912E7710c838347Ae178B4a", "--token-env")
    assert "ghp_16C7" not in str(err.value)
    assert secrets.scrub("x ghp_16C7e42F292c6912E7710c838347Ae178B4a y") == "x *** y"  # registered
    assert secrets.redact({"token_env": "sk-live/abc=="}) == {"token_env": "***"}
    assert secrets.redact({"token_env": "MY_TOKEN"}) == {"token_env": "MY_TOKEN"}
    for name in ("MY_TOKEN", "HF_TOKEN", "OPENAI_API_KEY", "AUDIT_TEST_TOKEN_2"):
        assert not secrets.looks_like_secret(name)
