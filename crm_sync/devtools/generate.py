"""Deterministic generator of the bundled source tables (and of large ones for benchmarks).

The same seed and sizes always give byte-identical files. A few percent of the rows are bad in
the ways the CRM documents describe, so that validation and quarantine have work to do:
an email with a space (``test .sok@gmail.com``), a missing required name, an id of the wrong
format, a Salesforce record id in the external id field, too many Brevo attributes, and a
duplicated matching key.

    crm-sync generate --out data                    # the committed demo tables
    crm-sync generate --out /tmp/big --scale 250    # ~1,000,000 rows for benchmarks
"""

from __future__ import annotations

import csv
import json
import random
import string
from datetime import datetime, timedelta, timezone
from pathlib import Path

# Rows per table at scale 1 (the committed demo data: 4,000 rows in all).
BASE_SIZES = {"leads": 1500, "contacts": 1500, "companies": 600, "projects": 400}
ALL_ROWS = sum(BASE_SIZES.values())  # rows of all four tables at scale 1
START = datetime(2026, 11, 1, tzinfo=timezone.utc)
DAYS = 7
BAD_SHARE = 0.03

FIRST = "Ada Alan Grace Linus Margaret Ken Barbara Dennis Frances Edsger Radia Donald Hedy Tim " \
    "Katherine John Mary Guido Sophie Yukihiro Anita Bjarne Carol Niklaus Shafi".split()
LAST = "Lovelace Turing Hopper Torvalds Hamilton Thompson Liskov Ritchie Allen Dijkstra Perlman " \
    "Knuth Lamarr Berners-Lee Johnson McCarthy Shaw Rossum Wilson Matsumoto Borg Stroustrup " \
    "Shaw Wirth Goldwasser".split()
DOMAINS = ["example.com", "acme.io", "globex.com", "initech.net", "umbrella.org", "hooli.com"]
INDUSTRIES = ["Technology", "Finance", "Healthcare", "Retail", "Manufacturing", "Education"]
COUNTRIES = ["US", "DE", "FR", "GB", "IN", "BR", "JP", "NL"]
LEAD_STATUS = ["new", "contacted", "qualified", "lost"]
STAGES = ["subscriber", "lead", "marketingqualifiedlead", "opportunity", "customer"]
PROJECT_STATUS = ["planned", "active", "on_hold", "done"]
TITLES = ["CTO", "Data Engineer", "VP Sales", "Analyst", "Founder", "Office Manager"]
ALNUM = string.ascii_letters + string.digits


def _timestamp(rng: random.Random, index: int, total: int, days: int = DAYS) -> str:
    # Spread rows over `days` days; within a day, a random second.
    day = index * days // max(total, 1)
    moment = START + timedelta(days=day, seconds=rng.randrange(86400))
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _person(rng: random.Random, i: int) -> tuple[str, str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    local = f"{first}.{last}{i}".lower().replace("-", "")
    if rng.random() < 0.05:
        local += "+crm"  # plus-addressing is valid and must pass
    return first, last, f"{local}@{rng.choice(DOMAINS)}"


def _phone(rng: random.Random) -> str:
    return f"+1-555-{rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}"


def _bad(rng: random.Random) -> bool:
    return rng.random() < BAD_SHARE


def leads(rng: random.Random, n: int, days: int = DAYS):
    for i in range(n):
        first, last, email = _person(rng, i)
        row = {
            "lead_id": f"LD-{i:07d}",
            "superleap_id": "",
            "name": f"{first} {last}",
            "email": email,
            "phone": _phone(rng),
            "status": rng.choice(LEAD_STATUS),
            "source": rng.choice(["web", "referral", "event", "partner"]),
            "updated_at": _timestamp(rng, i, n, days),
        }
        if _bad(rng):
            kind = rng.randrange(3)
            if kind == 0:  # the documented failure: a space in the local part
                row["email"] = f"{first.lower()} .{last.lower()}@gmail.com"
            elif kind == 1:
                row["name"] = ""
            else:  # not <org>_<8 chars>: the id format Superleap issues
                row["superleap_id"] = f"SL-{rng.randrange(10**6):06d}"
        yield row


def contacts(rng: random.Random, n: int, n_companies: int, days: int = DAYS):
    emails: list[str] = []
    for i in range(n):
        first, last, email = _person(rng, i)
        row = {
            "contact_id": f"CT-{i:07d}",
            "email": email,
            "first_name": first,
            "last_name": last,
            "phone": _phone(rng),
            "job_title": rng.choice(TITLES),
            "lifecycle_stage": rng.choice(STAGES),
            "company_id": f"CO-{rng.randrange(max(n_companies, 1)):07d}",
            "updated_at": _timestamp(rng, i, n, days),
        }
        if _bad(rng):
            kind = rng.randrange(4)
            if kind == 0:
                row["email"] = email.replace("@", " at ")
            elif kind == 1:
                row["email"] = ""
            elif kind == 2:
                row["last_name"] = ""
            elif emails:  # a second row for the same HubSpot record, later the same day
                row["email"] = emails[-1]
        emails.append(row["email"])
        yield row


def companies(rng: random.Random, n: int, days: int = DAYS):
    for i in range(n):
        name = f"{rng.choice(LAST)} {rng.choice(['Labs', 'Systems', 'Group', 'GmbH', 'Inc'])} {i}"
        row = {
            "company_id": f"CO-{i:07d}",
            "name": name,
            "domain": f"{name.split()[0].lower()}{i}.com",
            "industry": rng.choice(INDUSTRIES),
            "employees": str(rng.randrange(1, 50000)),
            "phone": _phone(rng),
            "country": rng.choice(COUNTRIES),
            "annual_revenue": f"{rng.randrange(10**5, 10**9)}.00",
            "updated_at": _timestamp(rng, i, n, days),
        }
        if _bad(rng):
            if rng.random() < 0.5:
                row["name"] = ""
            else:  # an 18-character Salesforce record id where the external id belongs
                row["company_id"] = "001" + "".join(rng.choice(ALNUM) for _ in range(15))
        yield row


def projects(rng: random.Random, n: int, n_companies: int, days: int = DAYS):
    for i in range(n):
        extra = {f"cf_{k}": rng.randrange(1000) for k in range(rng.randrange(0, 4))}
        row = {
            "project_id": f"PR-{i:07d}",
            "name": f"Project {rng.choice(LAST)} {i}",
            "status": rng.choice(PROJECT_STATUS),
            "budget": str(rng.randrange(1000, 500000)),
            "start_date": (START.date() + timedelta(days=rng.randrange(-90, 90))).isoformat(),
            "company_id": f"CO-{rng.randrange(max(n_companies, 1)):07d}",
            "custom_fields": "",
            "updated_at": _timestamp(rng, i, n, days),
        }
        if _bad(rng):
            if rng.random() < 0.5:  # over Brevo's 500-attributes-per-record limit
                extra = {f"cf_{k}": k for k in range(501)}
            else:
                row["name"] = ""
        row["custom_fields"] = json.dumps(extra, separators=(",", ":")) if extra else ""
        yield row


def _rng(seed: int, table: str) -> random.Random:
    """The generator of one table: the same seed gives the same data (no security use)."""
    return random.Random(f"{seed}-{table}")  # nosec B311  # reproducible test data, no secrets


def generate(out: str | Path, scale: float = 1.0, seed: int = 42,
             days: int = DAYS) -> dict[str, int]:
    """Write leads/contacts/companies/projects CSVs into ``out``; return rows per table. The
    rows' `updated_at` spread over `days` days from START (the benchmark varies it to tell a
    partition's size from the table's)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = {name: max(1, int(size * scale)) for name, size in BASE_SIZES.items()}
    tables = {
        "leads": leads(_rng(seed, "leads"), sizes["leads"], days),
        "contacts": contacts(_rng(seed, "contacts"), sizes["contacts"],
                             sizes["companies"], days),
        "companies": companies(_rng(seed, "companies"), sizes["companies"], days),
        "projects": projects(_rng(seed, "projects"), sizes["projects"],
                             sizes["companies"], days),
    }
    for name, rows in tables.items():
        with open(out / f"{name}.csv", "w", newline="", encoding="utf-8") as fh:
            writer = None
            for row in rows:  # streamed: millions of rows never sit in memory
                if writer is None:
                    writer = csv.DictWriter(fh, fieldnames=list(row), lineterminator="\n")
                    writer.writeheader()
                writer.writerow(row)
    return sizes
