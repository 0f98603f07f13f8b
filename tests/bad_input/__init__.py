"""The bad-input suite (a package: its files may share names with tests/, e.g. test_grids.py)."""
