"""``python -m audit_core ...``: the ``audit`` command without its console script (for example
in an environment whose ``bin/`` is not on PATH, or to pick the interpreter explicitly)."""

from audit_core.cli import main

if __name__ == "__main__":
    main(prog_name="python -m audit_core")
