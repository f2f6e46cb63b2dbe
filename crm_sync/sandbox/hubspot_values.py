"""HubSpot's checks of one property value by the property's `type` (the properties API's
`type`, from the object's fixture: hubspot_objects.py). Each check returns None or
(error code, message) as HubSpot puts them in a validation result.

Sources (docs/sandbox/hubspot.md lists each as documented / inferred / guessed):
- number: `1.4210854715202004e-14 was not a valid number.` with error INVALID_INTEGER, whole
  body captured in https://github.com/Atlas-Authority/marketing-automation/issues/206
  (a number property, batch/update): so exponent notation is refused [documented by a capture].
  Only plain decimals `-?digits[.digits]` pass; `4,68`, `+1`, `.5`, `1.` are refused [guess:
  strict where HubSpot is silent].
- leading or trailing whitespace in any non-string value is refused since 2025-04-07
  (https://developers.hubspot.com/changelog/breaking-change-enhanced-validations-for-non-
  string-properties-in-hubspots-crmobject-apis) [documented].
- enumeration: `reports was not one of the allowed options: [PRODUCT_ISSUE, ...]`, error
  INVALID_OPTION (https://github.com/gregorspan/csc-frodx/issues/21, and the v1 form in
  https://github.com/gitcoinco/code_fund_ads/issues/479) [documented by captures].
- bool: a `bool` property lists the options true/false (properties API, fieldType
  booleancheckbox); another value answers INVALID_OPTION like an enumeration [inferred]; only
  the lowercase `true` / `false` pass [guess].
- date: `YYYY-MM-DD` or epoch milliseconds at midnight UTC (https://developers.hubspot.com/docs/
  api/crm/properties, "date" type: "midnight UTC"); anything else INVALID_DATE [code and the
  "not midnight" message recalled from HubSpot community threads: guess].
- datetime: epoch milliseconds or an ISO 8601 date-time with a time and a zone (docs: "ISO
  8601 format or UNIX timestamp in milliseconds"); a date alone is refused with INVALID_LONG
  (the code HubSpot answered for a datetime given `2025-10-23`, https://github.com/verbb/formie/
  issues/1755) [inferred; the message text is a guess].
- email: `Email address x@y is invalid`, INVALID_EMAIL (REFERENCE.md citing
  https://github.com/Atlas-Authority/marketing-automation/issues/174: a mistyped TLD failed the
  batch) [documented]; the address pattern (formats.EMAIL) and the known-TLD list are guesses.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone

from crm_sync.sandbox.formats import EMAIL

_NUMBER = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_MILLIS = re.compile(r"^-?[0-9]{1,16}$")
_DATETIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?"
                       r"(Z|[+-][0-9]{2}:[0-9]{2})$")
DAY_MS = 86_400_000

# GUESS: HubSpot checks an address's domain (a mistyped TLD such as `.con` is refused:
# marketing-automation#174) but does not say how. The sandbox accepts only these TLDs: the
# common generic ones and the country codes seen in tests and demo data. A TLD missing here is a
# sandbox gap, not a HubSpot rule: add it.
KNOWN_TLDS = frozenset({
    "com", "net", "org", "io", "co", "edu", "gov", "info", "biz", "dev", "app", "ai", "tech",
    "us", "uk", "de", "fr", "es", "it", "nl", "be", "ch", "at", "se", "no", "dk", "fi", "pl",
    "pt", "ie", "jp", "cn", "in", "au", "nz", "ca", "br", "mx", "ar", "za", "sg", "hk", "kr",
    "ru", "eu",
})


def number_problem(value: str) -> tuple[str, str] | None:
    if _NUMBER.match(value):
        return None
    return "INVALID_INTEGER", f"{value} was not a valid number."


def option_problem(value: str, options: tuple[str, ...]) -> tuple[str, str] | None:
    if value in options:
        return None
    return "INVALID_OPTION", f"{value} was not one of the allowed options: [{', '.join(options)}]"


def date_problem(value: str) -> tuple[str, str] | None:
    if _DATE.match(value):
        try:
            date.fromisoformat(value)
            return None
        except ValueError:
            pass
    elif _MILLIS.match(value):
        ms = int(value)
        if ms % DAY_MS == 0:
            return None
        at = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
        return "INVALID_DATE", (f"{value} is at {at.hour}:{at.minute}:{at.second}."
                                f"{at.microsecond // 1000} UTC, not midnight!")
    return "INVALID_DATE", f"{value} is not a valid date: expected YYYY-MM-DD or epoch " \
                           f"milliseconds at midnight UTC"


def datetime_problem(value: str) -> tuple[str, str] | None:
    if _MILLIS.match(value):
        return None
    if _DATETIME.match(value):
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
            return None
        except ValueError:
            pass
    return "INVALID_LONG", f"{value} was not a valid long."


def email_problem(value: str) -> tuple[str, str] | None:
    if EMAIL.match(value) and value.rsplit(".", 1)[-1].lower() in KNOWN_TLDS:
        return None
    return "INVALID_EMAIL", f"Email address {value} is invalid"


def value_problem(kind: str, value: str, options: tuple[str, ...] = ()) -> tuple[str, str] | None:
    """(code, message) when HubSpot refuses `value` for a property of type `kind`, else None.
    `string` (and `phone_number`, stored as entered) take any text. No pattern above admits
    surrounding whitespace: documented as refused for non-string values since 2025-04-07."""
    if kind == "email":
        return email_problem(value)
    if kind == "number":
        return number_problem(value)
    if kind in ("bool", "enumeration"):
        return option_problem(value, options)
    if kind == "date":
        return date_problem(value)
    if kind == "datetime":
        return datetime_problem(value)
    return None
