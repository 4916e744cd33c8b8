"""Schemathesis hooks for scripts/openapi-fuzz.

Every generated request to a token holder's route carries a token of its own, freshly
issued by the server under test: a logout or rotation in one case must not leave every later
case of the run with a dead token (they would all be a 401 and test nothing else).
"""

import json
import os
import urllib.request

import schemathesis

BASE = os.environ["SESSIOND_FUZZ_BASE"]
API_KEY = os.environ["SESSIOND_FUZZ_API_KEY"]


@schemathesis.auth(refresh_interval=None, retry_on=[])
class FreshSession:
    def get(self, case, context):
        request = urllib.request.Request(
            BASE + "/v1/sessions",
            data=json.dumps({"userId": "openapi-fuzz"}).encode(),
            headers={"X-Api-Key": API_KEY, "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["token"]

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
