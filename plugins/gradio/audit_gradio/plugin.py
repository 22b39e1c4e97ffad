"""The hook implementations of audit-gradio (entry point ``audit = gradio``)."""

from __future__ import annotations

from audit_core import hookimpl


@hookimpl
def register_targets(register):
    """``target: {plugin: gradio, url: ..., api_name: ..., inputs: [...]}`` in audit.yaml."""
    register("gradio", "audit_gradio.target:GradioTarget")  # imported on first use: gradio_client is slow to import
