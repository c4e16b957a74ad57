"""Checks moto_soak.py's Query shortcut against stock moto, in-process (no server): a GSI with a
range key, every key-condition operator, both directions, Limits from 1 to past the end, paged to
the last page, then after updates that move items' range keys and deletes. moto_soak with
CALLFY_MOTO_CHECK_QUERIES=1 runs stock moto's Query beside its own on every call and raises when
the items or the LastEvaluatedKey differ. Run by scripts/test; exits non-zero on a difference.
"""
import itertools
import os
import sys

os.environ["CALLFY_MOTO_CHECK_QUERIES"] = "1"
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import boto3  # noqa: E402
import moto_soak  # noqa: E402,F401  (patches moto's DynamoDB models on import)
from moto import mock_aws  # noqa: E402

OPERATORS = ["a <= :v", "a < :v", "a >= :v", "a > :v", "a = :v", "a BETWEEN :v AND :w", "begins_with(a, :p)"]


def pages(ddb, **kw):
    count = 0
    while True:
        out = ddb.query(**kw)
        count += 1
        if "LastEvaluatedKey" not in out:
            return count
        kw["ExclusiveStartKey"] = out["LastEvaluatedKey"]


@mock_aws
def main():
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    ddb.create_table(
        TableName="pages",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("pk", "sk", "b", "a")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[{
            "IndexName": "ordered",
            "KeySchema": [{"AttributeName": "b", "KeyType": "HASH"}, {"AttributeName": "a", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "ALL"},
        }],
    )
    # Three items per range value, from several table partitions: ties broken by the table's keys.
    for i in range(40):
        item = {"pk": {"S": f"p{i % 7}"}, "sk": {"S": f"s{i:02d}"}, "b": {"S": "x"}, "a": {"S": f"{i // 3:03d}"}}
        ddb.put_item(TableName="pages", Item=item)
    queries = 0

    def every_shape():
        nonlocal queries
        for cond, forward, limit in itertools.product(OPERATORS, [True, False], [None, 1, 3, 6, 18, 50]):
            values = {":b": {"S": "x"}}
            values.update({k: {"S": v} for k, v in ((":v", "005"), (":w", "009"), (":p", "00")) if k in cond})
            kw = dict(TableName="pages", IndexName="ordered", KeyConditionExpression="b = :b AND " + cond,
                      ExpressionAttributeValues=values, ScanIndexForward=forward)
            if limit:
                kw["Limit"] = limit
            queries += pages(ddb, **kw)

    every_shape()
    # Range keys moved in place and items deleted: the order is kept up to date.
    for i in range(0, 40, 5):
        ddb.update_item(TableName="pages", Key={"pk": {"S": f"p{i % 7}"}, "sk": {"S": f"s{i:02d}"}},
                        UpdateExpression="SET a = :a", ExpressionAttributeValues={":a": {"S": "004"}})
        ddb.delete_item(TableName="pages", Key={"pk": {"S": f"p{(i + 1) % 7}"}, "sk": {"S": f"s{i + 1:02d}"}})
    every_shape()
    print(f"moto_soak: {queries} GSI Query pages, each the same as stock moto's")


if __name__ == "__main__":
    main()
