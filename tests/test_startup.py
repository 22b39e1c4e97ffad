"""Start-up stays light: `audit --help` loads every installed plugin's entry point, and `audit
plugins` calls every plugin's `register_*` hooks, but neither imports torch nor the other heavy
libraries: the shipped plugins register by `"module:attr"` reference, imported on first use
(their timing is benchmarks/bench_run.py's and RESULTS.md's)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "diffusers", "sklearn", "matplotlib", "scipy", "transformers", "pytest", "gradio", "gradio_client", "huggingface_hub")

PROBE = """
import json, sys
from audit_core.cli import main
try:
    main({args!r})
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "args", [["--help"], ["run", "--help"], ["plugins", "--help"], ["--version"], ["plugins"], ["plugins", "--json"]]
)
def test_cli_start_up_imports_no_heavy_library(args):
    probe = PROBE.format(args=args, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    loaded = json.loads(out.stderr.strip().splitlines()[-1])
    assert loaded == [], f"`audit {' '.join(args)}` imported {loaded}"
    assert out.stdout.strip(), "the command printed nothing"
    if args[0] == "plugins" and "--help" not in args and importlib.util.find_spec("audit_pia"):
        assert "pia" in out.stdout  # the listing did call the hooks of the installed plugins


def test_lazy_plugin_packages_still_export_their_names():
    from audit_pia import PIA
    from audit_rediffuse import ReDiffuse
    from audit_torch_callable import TorchCallableTarget

    assert (PIA.name, ReDiffuse.name, TorchCallableTarget.name) == ("pia", "rediffuse", "torch-callable")
    import audit_pia

    with pytest.raises(AttributeError):
        audit_pia.NoSuchThing  # noqa: B018
