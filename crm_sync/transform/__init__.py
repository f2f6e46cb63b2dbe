"""From source rows to typed CRM payloads: the CRM frame, the documented rules
(pandera), conversion and digests, matching values."""
