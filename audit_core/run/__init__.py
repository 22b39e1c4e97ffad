"""A run: the runner, its executors, batching and preflight checks, the run directory and its
store, the gallery, sweeps, plugin defaults, the environment block, reporting and terminal output.
Imports every layer below it, never the CLI."""
