"""Tests of the built-in XAPI simulator (auditor.simulator)."""
