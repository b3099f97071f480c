"""schemathesis against the live console: each operation of the OpenAPI document the console serves, with data
generated from it, valid and invalid, over the real TLS listener; the answers must match the document.

The event stream is left to tests/e2e/test_console_e2e.py (it answers for minutes by design). Each operation is
driven through schemathesis's Hypothesis strategy (schemathesis.pytest.from_fixture does not run on pytest 9).
"""
from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from lab.launcher import Lab
from lab.scenario import load

MAX_EXAMPLES = 50  # per operation and mode: about 10 s in all
OPERATIONS = ["health", "openapi", "listEvents", "getEvent", "listEnrollments", "getState", "getStatePart", "reset",
              "listFaults", "setFault", "clearFaults", "clearFault", "listRecords", "addRecord", "removeRecord",
              "caPem", "caMobileconfig", "mdmEnrollments", "mdmRevoke", "mdmExpire", "mdmTokenLifetime",
              "mdmSetTokenLifetime", "mdmCommands", "mdmQueueCommand", "mdmUnenroll", "mdmPush", "recordDeviceTrace",
              "listAccounts", "exerciseAttempt"]
WITH_INPUT = ["listEvents", "getEvent", "listEnrollments", "getStatePart", "setFault", "clearFaults", "clearFault",
              "addRecord", "removeRecord", "mdmRevoke", "mdmExpire", "mdmSetTokenLifetime", "mdmCommands",
              "mdmQueueCommand", "mdmUnenroll", "mdmPush", "recordDeviceTrace",
              "exerciseAttempt"]  # the rest take nothing to get wrong
NOT_FUZZED = {"streamEvents"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A lab of this module's own: the fuzzer arms faults, adds records and resets."""
    with Lab(load("betterbag"), tmp_path_factory.mktemp("schemathesis-lab")) as running:
        yield running


@pytest.fixture(scope="module")
def console(lab):
    session = requests.Session()
    session.trust_env = False
    session.verify = str(lab.pki.cert_path)
    yield f"https://localhost:{lab.https_port}", session
    session.close()


@pytest.fixture(scope="module")
def api_schema(console):
    base, session = console
    return schemathesis.openapi.from_url(base + "/api/openapi.json", verify=session.verify, timeout=10)


def test_the_document_is_valid_openapi(api_schema):
    api_schema.validate()  # against the OpenAPI 3.0 meta-schema


def test_a_broken_document_would_be_caught(api_schema):
    broken = schemathesis.openapi.from_dict({**api_schema.raw_schema, "paths": {"/x": {"get": {"responses": 5}}}})
    with pytest.raises(ValueError):  # jsonschema_rs.ValidationError
        broken.validate()


def test_every_operation_is_fuzzed_but_the_stream(api_schema):
    raw = api_schema.raw_schema["paths"]
    operations = {op["operationId"]: op for ops in raw.values() for op in ops.values()}
    assert set(operations) == set(OPERATIONS) | NOT_FUZZED
    assert {i for i, op in operations.items() if op.get("parameters") or op.get("requestBody")} - NOT_FUZZED == \
        set(WITH_INPUT)


CASES = [(op, GenerationMode.POSITIVE) for op in OPERATIONS] + [(op, GenerationMode.NEGATIVE) for op in WITH_INPUT]


@pytest.mark.parametrize("operation_id,mode", CASES, ids=[f"{op}-{mode.value}" for op, mode in CASES])
def test_the_console_keeps_its_openapi_document(api_schema, console, operation_id, mode):
    base, session = console
    operation = api_schema.find_operation_by_id(operation_id)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        case.call_and_validate(base_url=base, session=session, verify=session.verify, timeout=10)

    check()
