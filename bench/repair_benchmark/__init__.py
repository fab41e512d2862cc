"""A repair benchmark generated from reference programs and bug injectors (see generate.py)."""
