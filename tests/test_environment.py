"""The run's environment record lists the plugins that took part, and apart from them the
plugins that were installed but disabled (they did not load, so they cannot have run)."""

from __future__ import annotations

from audit_core.run import environment
from audit_core.plugin import manager as plugins


def test_disabled_plugins_are_not_listed_as_loaded(monkeypatch):
    listing = [
        {"name": "good", "version": "0.1.0", "registers": {"attacks": ["good"]}},
        {"name": "typo", "version": "0.3.0", "broken": "it implements a hook that does not exist"},
    ]
    monkeypatch.setattr(plugins, "get_plugins", lambda **_: listing)
    env = environment.collect()
    assert env["plugins"] == {"good": "0.1.0"}
    assert env["disabled_plugins"] == {"typo": "it implements a hook that does not exist"}


def test_no_disabled_block_when_every_plugin_loads(monkeypatch):
    monkeypatch.setattr(plugins, "get_plugins", lambda **_: [{"name": "good", "version": "0.1.0"}])
    assert "disabled_plugins" not in environment.collect()
