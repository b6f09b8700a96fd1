"""The built-in protocols, one module each (SPEC §2-§5)."""
