"""The baseline most teams would write instead of Callfy's Rust: a Python Lambda handler that
creates boto3 DynamoDB, SQS and S3 clients at init. A minimal runtime loop serves it, so the
figure is Python and boto3 alone (the managed runtime's own bootstrap would add to it)."""
import json
import os
import urllib.request

import boto3

dynamodb = boto3.client("dynamodb")
sqs = boto3.client("sqs")
s3 = boto3.client("s3")


def handler(event, context):
    return {"statusCode": 200, "body": "ok"}


BASE = "http://%s/2018-06-01/runtime/invocation" % os.environ["AWS_LAMBDA_RUNTIME_API"]
while True:
    with urllib.request.urlopen(BASE + "/next") as r:
        request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read() or b"{}")
    body = json.dumps(handler(event, None)).encode()
    post = urllib.request.Request(BASE + "/%s/response" % request_id, data=body, method="POST")
    urllib.request.urlopen(post).read()
