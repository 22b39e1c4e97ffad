"""Copyright mode, one sub-package: set inference over suspects vs reference (inference), the
combined rank test's two-look budget (two_stage) and the run's side of it (rescore), the
model-free distribution-shift check (shift) and generated reference sets (reference)."""
