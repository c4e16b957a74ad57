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
import moto_soak  # noqa: E402  (patches moto's DynamoDB models on import)
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
    # Items replaced whole (a new item object), and a transaction that fails and puts back what
    # it touched: the index holds the items as they are.
    for i in range(0, 40, 3):
        item = {"pk": {"S": f"p{i % 7}"}, "sk": {"S": f"s{i:02d}"}, "b": {"S": "x"}, "a": {"S": f"{(i * 7) % 13:03d}"}}
        ddb.put_item(TableName="pages", Item=item)
    try:
        ddb.transact_write_items(TransactItems=[
            {"Put": {"TableName": "pages", "Item": {"pk": {"S": "p0"}, "sk": {"S": "s00"}, "b": {"S": "x"}, "a": {"S": "999"}}}},
            {"ConditionCheck": {"TableName": "pages", "Key": {"pk": {"S": "p3"}, "sk": {"S": "s10"}},
                                "ConditionExpression": "attribute_not_exists(pk)"}},
        ])
        raise AssertionError("the transaction should have been refused")
    except ddb.exceptions.TransactionCanceledException:
        pass
    every_shape()
    print(f"moto_soak: {queries} GSI Query pages, each the same as stock moto's")
    projections(ddb)
    answers(ddb)


def projections(ddb):
    """KEYS_ONLY and INCLUDE indexes, a ProjectionExpression on an index, a FilterExpression and
    a consistent read (moto's own way, which must refuse it on a GSI), against stock moto."""
    ddb.create_table(
        TableName="shapes",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("pk", "sk", "b", "a")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {"IndexName": "keys", "KeySchema": [{"AttributeName": "b", "KeyType": "HASH"}, {"AttributeName": "a", "KeyType": "RANGE"}],
             "Projection": {"ProjectionType": "KEYS_ONLY"}},
            {"IndexName": "some", "KeySchema": [{"AttributeName": "b", "KeyType": "HASH"}, {"AttributeName": "a", "KeyType": "RANGE"}],
             "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["n", "t"]}},
            {"IndexName": "nosort", "KeySchema": [{"AttributeName": "b", "KeyType": "HASH"}],
             "Projection": {"ProjectionType": "ALL"}},
        ],
    )
    for i in range(30):
        ddb.put_item(TableName="shapes", Item={
            "pk": {"S": f"p{i % 4}"}, "sk": {"S": f"s{i:02d}"}, "b": {"S": "x"}, "a": {"S": f"{i // 2:03d}"},
            "n": {"N": str(i * 1.5)}, "t": {"S": "text"}, "u": {"S": "unprojected"},
        })
    count = 0
    for index in ("keys", "some", "nosort"):
        ranged = index != "nosort"
        for extra in ({}, {"ProjectionExpression": "pk, n, a"}, {"FilterExpression": "n > :f"}):
            for forward, limit in itertools.product([True, False], [None, 1, 4, 7]):
                values = {":b": {"S": "x"}, **({":v": {"S": "009"}} if ranged else {}),
                          **({":f": {"N": "10"}} if "FilterExpression" in extra else {})}
                kw = dict(TableName="shapes", IndexName=index,
                          KeyConditionExpression="b = :b" + (" AND a <= :v" if ranged else ""),
                          ExpressionAttributeValues=values, ScanIndexForward=forward, **extra)
                if limit:
                    kw["Limit"] = limit
                count += pages(ddb, **kw)
    try:
        ddb.query(TableName="shapes", IndexName="keys", KeyConditionExpression="b = :b",
                  ExpressionAttributeValues={":b": {"S": "x"}}, ConsistentRead=True)
        raise AssertionError("a consistent read of a GSI should have been refused")
    except ddb.exceptions.ClientError as e:
        if "Consistent reads are not supported" not in str(e):
            raise
    print(f"moto_soak: {count} pages of KEYS_ONLY, INCLUDE and unsorted indexes, projected and filtered, the same as stock moto's")


def answers(ddb):
    """Items of every attribute type: the fast projection and size against moto's own, and every
    read's answer (written directly) against moto's serializer (CALLFY_MOTO_CHECK_QUERIES)."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    item = {
        "pk": {"S": "p"}, "sk": {"S": "s\u00e9"}, "n": {"N": "12.50"}, "e": {"N": "1e2"}, "b": {"B": b"\x00\xffbytes"},
        "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "2.5"]}, "bs": {"BS": [b"x", b"y"]},
        "m": {"M": {"k": {"S": "v"}, "l": {"L": [{"N": "1"}, {"BOOL": True}]}}},
        "l": {"L": [{"S": "x"}, {"NULL": True}]}, "t": {"BOOL": False}, "z": {"NULL": True},
    }
    ddb.create_table(
        TableName="answers",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("pk", "sk")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    )
    ddb.put_item(TableName="answers", Item=item)
    ddb.put_item(TableName="answers", Item={**item, "sk": {"S": "t"}})
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    table = dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].tables["answers"]
    stored = next(iter(table.items[DynamoType(item["pk"])].values()))
    for names in (["pk"], ["pk", "sk", "n"], list(item), ["missing", "m", "l"], ["ss", "ns", "bs", "b"]):
        exprs = [[n] for n in names]
        fast, stock = moto_soak.project(stored, exprs), moto_soak._project(stored, exprs)
        if moto_soak.normal(fast.to_json()) != moto_soak.normal(stock.to_json()):
            raise AssertionError(f"projection of {names} differs from moto's")
    if moto_soak.item_size(stored) != moto_soak._item_size(stored):
        raise AssertionError("item size differs from moto's")
    key = {"pk": item["pk"], "sk": item["sk"]}
    projection = {"ProjectionExpression": "pk, n, b, ss, m"}
    for extra in ({}, projection):
        ddb.get_item(TableName="answers", Key=key, **extra)
        ddb.query(TableName="answers", KeyConditionExpression="pk = :p",
                  ExpressionAttributeValues={":p": item["pk"]}, Limit=1, **extra)
        ddb.scan(TableName="answers", **extra)
        ddb.batch_get_item(RequestItems={"answers": {"Keys": [key], **extra}})
    ddb.query(TableName="answers", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": item["pk"]},
              ReturnConsumedCapacity="TOTAL", Select="COUNT")
    print("moto_soak: GetItem, Query, Scan, BatchGetItem answers the same as moto's serializer's")


if __name__ == "__main__":
    main()
