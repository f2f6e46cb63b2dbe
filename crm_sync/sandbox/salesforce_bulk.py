"""Salesforce Bulk API 2.0 ingest (upsert jobs), in the sandbox.

    POST  /services/data/vXX.X/jobs/ingest            {"object", "operation": "upsert",
          "externalIdFieldName", "contentType": "CSV", "lineEnding"}  -> 200 job info, Open
    PUT   .../jobs/ingest/{id}/batches                 text/csv body           -> 201
    PATCH .../jobs/ingest/{id}                         {"state": "UploadComplete" | "Aborted"}
    GET   .../jobs/ingest/{id}                         job info (Open, UploadComplete,
          InProgress, JobComplete, Failed, Aborted; numberRecordsProcessed/Failed)
    GET   .../jobs/ingest/{id}/successfulResults/      CSV sf__Id,sf__Created,<columns>
    GET   .../jobs/ingest/{id}/failedResults/          CSV sf__Id,sf__Error,<columns>
    GET   .../jobs/ingest/{id}/unprocessedrecords/     CSV <columns>

Sources: Bulk API 2.0 and Bulk API Developer Guide (Create a Job, Upload Job Data, Close or
Abort a Job, Get Job Info, Get Job Successful/Failed/Unprocessed Record Results, Job States,
Prepare CSV Files, Valid CSV Record Rows, Step 5: Bulk Upsert),
https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/ (for example
get_job_failed_results.htm, datafiles_csv_valid_record_rows.htm); REFERENCE.md §4 (Bulk API 2.0
row). Documented: the resources are there from API 41.0; successfulResults carries sf__Id and
sf__Created, failedResults sf__Id and sf__Error ("Error code and message"), both followed by the
row's original fields; unprocessedrecords is for failed or aborted jobs; "Empty field values are
ignored when you update records. To set a field value to null, use a field value of #N/A"; the
lineEnding (LF, the default, or CRLF) must match the CSV's. An unknown CSV column fails the job
with `errorMessage` "InvalidBatch : Field name not found : <column>" (a captured job info,
https://github.com/amp-labs/connectors/pull/118). A `Account.External_Id__c` header names the
parent by its external id ("Relationship Fields in a Header Row"; salesforce_relations.py).

Each row is checked with the collections upsert's own rules and written by the same org code
(salesforce_org.Salesforce.upsert_collection), so a bulk row makes the very record the
composite upsert would make, found by the same external id index. Processing is asynchronous:
after UploadComplete the job is InProgress for `processing_seconds` (POST
/_sandbox/salesforce/bulk {"processing_seconds": S} sets it), then the next read of the job
processes it and answers JobComplete (or Failed).

GUESS (strict, where the documentation is silent):
- an illegal state change, an upload to a job that is not Open, a second upload, and results
  asked for before the job is JobComplete/Failed/Aborted: 400 INVALIDJOBSTATE;
- an unknown job id: 404 NOT_FOUND "The requested resource does not exist";
- a create body that is not a valid upsert job (unknown key, operation other than upsert,
  missing externalIdFieldName, contentType other than CSV, lineEnding not LF/CRLF,
  columnDelimiter other than COMMA, unknown object or a field that is not an External ID):
  400 INVALIDJOB (Bulk API 1.0's exception code);
- an upload whose Content-Type is not text/csv: 415 UNSUPPORTED_MEDIA_TYPE;
- a CSV value that cannot be read as the field's type fails that row (sf__Error, with the
  collections upsert's JSON_PARSER_ERROR code) rather than the whole job;
- sf__Error is "STATUS_CODE:message:field,field" per error, errors joined by "; ";
- data whose line ending does not match the job's lineEnding fails the job with
  "ClientInputError : LineEnding is invalid on user data. Current LineEnding setting is LF";
- closing a job with no data fails it ("InvalidBatch : No CSV data"); results keep row order.
"""

from __future__ import annotations

import csv
import io
import json
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crm_sync.sandbox.salesforce import SalesforceAPI
from crm_sync.sandbox.salesforce_org import CRM, Salesforce
from crm_sync.sandbox.salesforce_relations import csv_relationship
from crm_sync.sandbox.salesforce_rules import NOT_FOUND, RequestError, check_type
from crm_sync.sandbox.salesforce_schema import (
    NUMBER_TYPES, TEXT_TYPES, SObjectType, new_record_id, sf_datetime,
)
from crm_sync.sandbox.state import SandboxState, now_ms

JOBS = "_bulk_jobs"  # where jobs are kept (with their CSV and results) in the sandbox database
MIN_BULK_VERSION = 41  # "This resource is available in API version 41.0 and later."
_BASE = "/services/data/v{version}/jobs/ingest"
_JOB = _BASE + "/{job_id}"
_CREATE_KEYS = {"object", "operation", "externalIdFieldName", "contentType", "lineEnding",
                "columnDelimiter"}
FINISHED = ("JobComplete", "Failed", "Aborted")


def _bad_job(message: str) -> RequestError:
    return RequestError(400, "INVALIDJOB", message)


def _bad_state(message: str) -> RequestError:
    return RequestError(400, "INVALIDJOBSTATE", message)


class SalesforceBulkHandlers(SalesforceAPI):
    """The ingest job resources; same session, allowance and error shape as the REST API."""

    processing_seconds = 0.5

    def routes(self) -> list[Route]:
        results = [(f"{_JOB}/{name}", self.api(self.results(name), MIN_BULK_VERSION))
                   for name in ("successfulResults", "failedResults", "unprocessedrecords")]
        return [
            Route(_BASE, self.api(self.create, MIN_BULK_VERSION, json_body=True),
                  methods=["POST"]),
            Route(_BASE + "/", self.api(self.create, MIN_BULK_VERSION, json_body=True),
                  methods=["POST"]),
            Route(_JOB, self.api(self.job_info, MIN_BULK_VERSION), methods=["GET"]),
            Route(_JOB, self.api(self.change_state, MIN_BULK_VERSION, json_body=True),
                  methods=["PATCH"]),
            Route(f"{_JOB}/batches", self.upload_endpoint(), methods=["PUT"]),
            *[Route(path, endpoint, methods=["GET"]) for path, endpoint in results],
            *[Route(path + "/", endpoint, methods=["GET"]) for path, endpoint in results],
            Route("/_sandbox/salesforce/bulk", self.configure, methods=["POST"]),
        ]

    def respond(self, body, status: int = 200, used: int | None = None) -> Response:
        if not isinstance(body, Response):
            return super().respond(body, status, used)
        if used is not None:
            body.headers["Sforce-Limit-Info"] = \
                f"api-usage={used}/{self.state.salesforce_daily_limit}"
        return body

    async def configure(self, request: Request) -> Response:
        try:
            seconds = float(json.loads(await request.body())["processing_seconds"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"message": "processing_seconds: a number is required"}, 400)
        type(self).processing_seconds = max(seconds, 0.0)
        return JSONResponse({"processing_seconds": self.processing_seconds})

    # -- jobs ------------------------------------------------------------------------------------
    def load(self, job_id: str) -> dict:
        job = self.state.db.get(CRM, JOBS, job_id)
        if job is None:
            raise RequestError(404, "NOT_FOUND", NOT_FOUND)
        return job

    def save(self, job: dict) -> None:
        job["info"]["systemModstamp"] = sf_datetime(now_ms())
        self.state.db.put(CRM, JOBS, job["info"]["id"], job, now_ms())

    def create(self, request: Request, body):
        if not isinstance(body, dict):
            raise _bad_job("the request body must be a JSON object")
        unknown = sorted(set(body) - _CREATE_KEYS)
        if unknown:
            raise _bad_job(f"Unrecognized field \"{unknown[0]}\"")
        if body.get("operation") != "upsert":
            raise _bad_job(f"operation: only upsert is served, not {body.get('operation')!r}")
        sobj = self.sobject(body.get("object"))
        ext_name = body.get("externalIdFieldName")
        if not isinstance(ext_name, str) or not ext_name:
            raise _bad_job("externalIdFieldName is required for an upsert job")
        found = sobj.field(ext_name)
        if not found or not found[1].external_id:
            raise _bad_job(f"Invalid External ID Field: {ext_name}")
        checks = (("contentType", ("CSV",)), ("lineEnding", ("LF", "CRLF")),
                  ("columnDelimiter", ("COMMA",)))
        for key, allowed in checks:
            if body.get(key, allowed[0]) not in allowed:
                raise _bad_job(f"{key}: {body[key]!r} is not one of {', '.join(allowed)}")
        job = {"info": self.new_info(request, sobj, found[0], body.get("lineEnding", "LF")),
               "csv": None, "results": None, "deadline": None}
        self.save(job)
        return 200, job["info"]

    def sobject(self, name) -> SObjectType:
        if not isinstance(name, str) or not name:
            raise _bad_job("object is required")
        try:
            return self.org.sobject(name)
        except RequestError:
            raise _bad_job(f"Entity '{name}' is not supported by the Bulk API.") from None

    def new_info(self, request: Request, sobj: SObjectType, ext: str, line_ending: str) -> dict:
        stamp = sf_datetime(now_ms())
        return {"id": new_record_id("750"), "operation": "upsert", "object": sobj.name,
                "createdById": self.org.user_id, "createdDate": stamp, "systemModstamp": stamp,
                "state": "Open", "externalIdFieldName": ext, "concurrencyMode": "Parallel",
                "contentType": "CSV", "apiVersion": float(request.path_params["version"]),
                "jobType": "V2Ingest", "lineEnding": line_ending, "columnDelimiter": "COMMA",
                "numberRecordsProcessed": 0, "numberRecordsFailed": 0, "retries": 0,
                "totalProcessingTime": 0, "apiActiveProcessingTime": 0,
                "apexProcessingTime": 0}

    def upload_endpoint(self):
        async def endpoint(request: Request) -> Response:
            raw = await request.body()  # read here: the wrapped handler is synchronous
            return await self.api(lambda req, _: self.upload(req, raw), MIN_BULK_VERSION)(request)
        return endpoint

    def upload(self, request: Request, raw: bytes):
        kind = request.headers.get("content-type", "")
        if kind.split(";")[0].strip().lower() != "text/csv":
            raise RequestError(415, "UNSUPPORTED_MEDIA_TYPE",
                               f"Content-Type header specified in HTTP request is not "
                               f"supported: {kind}")
        with self.state.db.transaction():
            job = self.load(request.path_params["job_id"])
            if job["info"]["state"] != "Open":
                raise _bad_state(f"Job {job['info']['id']} is {job['info']['state']}: data can "
                                 "only be uploaded to an Open job")
            if job["csv"] is not None:
                raise _bad_state("Job data was already uploaded: a job takes one upload")
            try:
                job["csv"] = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise RequestError(400, "INVALIDBATCH", "the CSV data is not UTF-8") from None
            self.save(job)
        return 201, Response(status_code=201)

    def change_state(self, request: Request, body):
        if not isinstance(body, dict) or set(body) != {"state"}:
            raise RequestError(400, "JSON_PARSER_ERROR", 'the body must be {"state": ...} only')
        wanted = body["state"]
        with self.state.db.transaction():
            job = self.load(request.path_params["job_id"])
            current = job["info"]["state"]
            if wanted == "UploadComplete" and current == "Open":
                job["info"]["state"] = "UploadComplete"
                job["deadline"] = time.time() + self.processing_seconds
            elif wanted == "Aborted" and current in ("Open", "UploadComplete", "InProgress"):
                job["info"]["state"] = "Aborted"
            else:
                raise _bad_state(f"Changing the state of a {current} job to {wanted} is not "
                                 "allowed")
            self.save(job)
        return 200, job["info"]

    def job_info(self, request: Request, body):
        return 200, self.advance(request.path_params["job_id"])["info"]

    # -- processing ------------------------------------------------------------------------------
    def advance(self, job_id: str) -> dict:
        """The job after the time that passed: InProgress until its deadline, then processed."""
        with self.state.db.transaction():
            job = self.load(job_id)
            info = job["info"]
            if info["state"] not in ("UploadComplete", "InProgress"):
                return job
            info["state"] = "InProgress"
            claim = time.time() >= job["deadline"] and not job.get("claimed")
            job["claimed"] = job.get("claimed") or claim
            self.save(job)
        if claim:  # only this request processes it; the org's upsert has its own transaction
            job = self.process(job)
            with self.state.db.transaction():
                if self.load(job_id)["info"]["state"] != "Aborted":
                    self.save(job)
        return job

    def process(self, job: dict) -> dict:
        info, started = job["info"], now_ms()
        try:
            header, rows = read_csv(job["csv"], info["lineEnding"])
            sobj = self.org.sobject(info["object"])
            names = [field_name(self.org, sobj, column) for column in header]
            if len({n if isinstance(n, str) else n[0] for n in names}) != len(names):
                raise JobFailure("InvalidBatch : Duplicate field name in the CSV header")
        except JobFailure as exc:
            info.update(state="Failed", errorMessage=str(exc))
            return job
        outcomes = self.upsert_rows(sobj, info["externalIdFieldName"], names, rows)
        job["results"] = [[row, outcome] for row, outcome in zip(rows, outcomes)]
        job["header"] = header
        info.update(state="JobComplete", numberRecordsProcessed=len(rows),
                    numberRecordsFailed=sum(1 for o in outcomes if not o["success"]),
                    totalProcessingTime=now_ms() - started)
        return job

    def upsert_rows(self, sobj: SObjectType, ext: str, names: list[str],
                    rows: list[list[str]]) -> list[dict]:
        """One outcome per row, in order: the collections upsert's result for each row that
        reads as the fields' types, a failure for each that does not."""
        outcomes: list[dict | None] = []
        records = []
        for row in rows:
            try:
                record = typed_record(sobj, names, row)
            except RequestError as exc:
                outcomes.append({"success": False, "errors": [
                    {"statusCode": exc.code, "message": exc.message, "fields": []}]})
                continue
            outcomes.append(None)
            records.append({"attributes": {"type": sobj.name}, **record})
        done = iter(self.org.upsert_collection(sobj, ext, records, False) if records else [])
        return [o if o is not None else next(done) for o in outcomes]

    # -- results ---------------------------------------------------------------------------------
    def results(self, kind: str):
        def handler(request: Request, body):
            job = self.advance(request.path_params["job_id"])
            if job["info"]["state"] not in FINISHED:
                raise _bad_state(f"Job {job['info']['id']} is {job['info']['state']}: its "
                                 "results are not available yet")
            return 200, csv_response(result_rows(job, kind))
        return handler


class JobFailure(Exception):
    """The job cannot be processed: it ends Failed with this errorMessage."""


def read_csv(text: str | None, line_ending: str) -> tuple[list[str], list[list[str]]]:
    if not text or not text.strip():
        raise JobFailure("InvalidBatch : No CSV data")
    crlf = "\r\n" in text
    if crlf != (line_ending == "CRLF") or (crlf and "\n" in text.replace("\r\n", "")):
        raise JobFailure("ClientInputError : LineEnding is invalid on user data. Current "
                         f"LineEnding setting is {line_ending}")
    try:
        lines = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        raise JobFailure(f"InvalidBatch : {exc}") from None
    header, rows = lines[0], [r for r in lines[1:] if r]
    if len(set(c.lower() for c in header)) != len(header):
        raise JobFailure("InvalidBatch : Duplicate field name in the CSV header")
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise JobFailure(f"InvalidBatch : row {number} has {len(row)} columns, the header "
                             f"{len(header)}")
    return header, rows


def field_name(org: Salesforce, sobj: SObjectType, column: str) -> str | tuple:
    """A header's field, or its relationship (`Account.External_Id__c`: a tuple, see
    salesforce_relations.csv_relationship)."""
    found = sobj.field(column)
    if found:
        return found[0]
    try:
        relationship = csv_relationship(org, sobj, column)
    except ValueError as exc:  # GUESS: a header no row can be read by fails the job
        raise JobFailure(f"InvalidBatch : {exc}") from None
    if not relationship:
        raise JobFailure(f"InvalidBatch : Field name not found : {column}")
    return relationship


def typed_record(sobj: SObjectType, names: list[str], row: list[str]) -> dict:
    """A CSV row as the JSON values the collections upsert reads (then checked the same way)."""
    record = {}
    for name, text in zip(names, row):
        if text == "":
            continue
        if isinstance(name, tuple):  # the parent by its external id; #N/A clears the field
            field, relationship, indexed, parent_field = name
            value = None if text == "#N/A" else typed_value(parent_field.type, text)
            check_type(parent_field, value)
            record.update({field: None} if value is None else {relationship: {indexed: value}})
            continue
        value = None if text == "#N/A" else typed_value(sobj.fields[name].type, text)
        check_type(sobj.fields[name], value)
        record[name] = value
    return record


def typed_value(kind: str, text: str):
    if kind in TEXT_TYPES or kind in ("date", "datetime"):
        return text
    if kind == "boolean":
        return {"true": True, "false": False}.get(text.lower(), text)
    try:
        return int(text) if kind == "int" else float(text) if kind in NUMBER_TYPES else text
    except ValueError:
        return text  # check_type answers the documented parser error for it


def sf_error(errors: list[dict]) -> str:
    return "; ".join(f"{e['statusCode']}:{e['message']}:{','.join(e['fields'])}"
                     for e in errors)


def result_rows(job: dict, kind: str) -> list[list[str]]:
    header = job.get("header") or []
    if kind == "unprocessedrecords":
        if job["results"] is not None:
            return [header]
        try:
            head, rows = read_csv(job["csv"], job["info"]["lineEnding"])
        except JobFailure:
            return [[]]
        return [head, *rows]
    if kind == "successfulResults":
        return [["sf__Id", "sf__Created", *header],
                *[[o["id"], str(o["created"]).lower(), *row]
                  for row, o in job["results"] or [] if o["success"]]]
    return [["sf__Id", "sf__Error", *header],
            *[[o.get("id", ""), sf_error(o["errors"]), *row]
              for row, o in job["results"] or [] if not o["success"]]]


def csv_response(rows: list[list[str]]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows(row for row in rows if row)
    return Response(out.getvalue(), 200, media_type="text/csv")


def routes(state: SandboxState) -> list[Route]:
    return SalesforceBulkHandlers(state, Salesforce(state)).routes()
