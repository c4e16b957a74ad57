"""Signs and validates requests with Twilio's own helper library (PyPI `twilio`), for the
cross-check in tests/twilio_signature.rs. Reads JSON cases on stdin, writes JSON results."""
import json
import sys

from twilio.request_validator import RequestValidator


class MultiDict(dict):
    """Repeated form names, as Flask's MultiDict offers them to the validator."""

    def __init__(self, pairs):
        super().__init__()
        self.pairs = pairs
        for k, v in pairs:
            self.setdefault(k, v)

    def getall(self, name):
        return [v for k, v in self.pairs if k == name]


out = []
for case in json.load(sys.stdin):
    v = RequestValidator(case["token"])
    algorithm = case.get("algorithm", "HMAC_SHA1")
    if "json_body" in case:
        signature = v.compute_signature(case["signed_url"], {}, algorithm)
        ours_ok = v.validate(case["request_url"], case["json_body"], case["our_signature"], algorithm)
    else:
        params = MultiDict([tuple(p) for p in case["params"]])
        signature = v.compute_signature(case["signed_url"], params, algorithm)
        ours_ok = v.validate(case["request_url"], params, case["our_signature"], algorithm)
    out.append({"signature": signature, "ours_ok": ours_ok})
json.dump(out, sys.stdout)
