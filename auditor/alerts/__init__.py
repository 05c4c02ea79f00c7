"""Alerts: their lifecycle, their routing, the sinks and the delivery of the outbox.

Imports nothing itself, so importing one room does not load the others (Apprise is heavy)."""
