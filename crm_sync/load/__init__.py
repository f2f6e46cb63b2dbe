"""Sending payloads: the runner (plan, send, record), quarantine replay, mirror deletes."""
