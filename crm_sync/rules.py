"""Formats the CRMs document, as regular expressions shared by validation and the sandbox.

Email: Superleap documents `test .sok@gmail.com` -> `invalid email format`, HubSpot
`INVALID_EMAIL`, Salesforce `INVALID_EMAIL_ADDRESS`. The pattern is the WHATWG "valid email
address" (what browsers accept): a dot-atom local part with no spaces, plus-addressing allowed,
and a domain of dot-separated labels with at least one dot.
"""

EMAIL_PATTERN = (
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)

# Phone: an optional +, then 7 to 20 digits with the usual separators (space . - ( )).
PHONE_PATTERN = r"^\+?(?:[0-9][ .()-]?){6,19}[0-9]$"

# Superleap record ids look like `g1koYv_2lLKYVan`: a 6-character org prefix, `_`, 8 characters
# (every id in Superleap's documentation has this shape, 15 characters in all).
SUPERLEAP_ID_PATTERN = r"^[A-Za-z0-9]{6}_[A-Za-z0-9]{8}$"

# Salesforce record ids: 15 (case-sensitive) or 18 (case-insensitive) alphanumerics, starting
# with a 3-character key prefix. Such values must not be sent as external ids.
SALESFORCE_ID_PATTERN = r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$"

# Brevo custom-object limits (per record upsert request).
BREVO_MAX_RECORDS = 1000
BREVO_MAX_BODY_BYTES = 1_000_000
BREVO_MAX_ATTRIBUTES = 500
BREVO_MAX_ASSOCIATIONS = 10

HUBSPOT_MAX_INPUTS = 100
SALESFORCE_MAX_RECORDS = 200
