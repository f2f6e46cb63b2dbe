"""The value formats the emulated CRMs check, in the sandbox's own copy.

The sandbox does not share these with the client's validation (crm_sync.transform.rules): it plays the
CRM, and a rule both sides borrowed from one place could be wrong on both sides with no test
able to see it. Each pattern says where it comes from; where the vendor documentation
(/work/shared/crm-docs/REFERENCE.md) gives only examples, the pattern is the sandbox's guess,
strict, and docs/sandbox/*.md say so.
"""

from __future__ import annotations

import re

# Email. The docs show that an address with a space is refused (Superleap's
# `test .sok@gmail.com` -> `invalid email format`) and name the errors (HubSpot INVALID_EMAIL,
# Salesforce INVALID_EMAIL_ADDRESS), but none of the three documents its pattern. GUESS: the
# WHATWG "valid email address" (what browsers accept): a dot-atom local part without spaces
# (plus-addressing allowed) and a domain of at least two dot-separated labels of letters, digits
# and inner hyphens, each at most 63 characters.
EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
