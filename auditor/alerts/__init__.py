"""Alerts: the lifecycle of alerts and, later, their sinks."""
