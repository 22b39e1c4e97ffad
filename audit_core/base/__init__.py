"""The bottom layer: errors, the config model, secrets, seeding, the DDIM maths, image records,
plugin params, the warn-once primitive. Imports nothing else of audit_core."""
