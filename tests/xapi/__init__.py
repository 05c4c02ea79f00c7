"""Tests of the XAPI client (auditor.xapi) against the simulator and a server of our own."""
