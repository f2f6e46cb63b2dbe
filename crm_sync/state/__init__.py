"""The sync store: state, quarantine (typed entries, masking), write-ahead log,
leases and ownership claims."""
