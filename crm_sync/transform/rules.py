"""Formats every CRM documents alike, as regular expressions for validation (the sandbox keeps
its own copies). A CRM's own limits and record rules are declared in its connector module
(its `PROFILE`, crm_sync/connectors/profile.py).

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

# Phone: Superleap parses and validates phones ("invalid number") but documents no format;
# HubSpot and Salesforce keep phones as text. A guess: an optional +, then 7 to 20 digits with
# the usual separators (space . - ( )), e.g. the documented "+1-555-123-4567".
PHONE_PATTERN = r"^\+?(?:[0-9][ .()-]?){6,19}[0-9]$"
