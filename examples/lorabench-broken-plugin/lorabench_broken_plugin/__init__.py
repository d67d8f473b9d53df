"""Test fixture: fails on import, as a plugin with a missing dependency or a bug would."""

raise RuntimeError("lorabench_broken_plugin fails on import on purpose (test fixture)")
