"""``python -m audit_core.cli``: the ``audit`` command."""

from . import main

main()
