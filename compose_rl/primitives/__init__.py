"""Reasoning primitives: the register (register.py), trace detectors and their calibration."""
