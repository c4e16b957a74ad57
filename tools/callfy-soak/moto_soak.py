"""moto for the soak: scripts/moto_server.py (DynamoDB calls applied one at a time), with one
change to DynamoDB's TransactWriteItems.

moto 5 backs up every table a transaction names before applying it, as a deep copy of the whole
table, once per item of the transaction: a claim (7 items) copies the table seven times. Under the
soak's load that makes each transaction cost time in proportion to the table, and moto's resident
memory grows by gigabytes within minutes (freed copies fragment the heap). Here the transaction
backs up only the items it names and, if it fails, puts exactly those back: the same
all-or-nothing outcome, without the copies. Nothing else changes.
"""
import copy
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))

import moto_server  # noqa: E402
import moto.dynamodb.models as models  # noqa: E402
from moto.dynamodb.models import DynamoDBBackend  # noqa: E402
from moto.dynamodb.models.dynamo_type import DynamoType  # noqa: E402
from moto.dynamodb.models.table import Table  # noqa: E402


class _NoTableCopies:
    """The `copy` module as moto's DynamoDB models see it: tables are not deep-copied."""

    def __getattr__(self, name):
        return getattr(copy, name)

    @staticmethod
    def deepcopy(x, memo=None):
        if isinstance(x, Table):
            return x
        return copy.deepcopy(x, memo)


_transact = DynamoDBBackend.transact_write_items


def _key(table, op):
    key = op.get("Key") or op.get("Item") or {}
    hash_value = key.get(table.hash_key_attr)
    if hash_value is None:
        return None
    range_value = key.get(table.range_key_attr) if table.range_key_attr else None
    return DynamoType(hash_value), (DynamoType(range_value) if range_value is not None else None)


def _get(table, h, r):
    if table.has_range_key:
        return table.items[h].get(r) if h in table.items else None
    return table.items.get(h)


def _restore(table, h, r, item):
    if table.has_range_key:
        if item is None:
            if h in table.items:
                table.items[h].pop(r, None)
        else:
            table.items[h][r] = item
    elif item is None:
        table.items.pop(h, None)
    else:
        table.items[h] = item


def transact_write_items(self, transact_items):
    saved = []
    for entry in transact_items:
        op = next(iter(entry.values()), None)
        table = self.tables.get(op.get("TableName")) if isinstance(op, dict) else None
        key = _key(table, op) if table is not None else None
        if key is not None:
            saved.append((table, key[0], key[1], copy.deepcopy(_get(table, *key))))
    try:
        return _transact(self, transact_items)
    except Exception:
        for table, h, r, item in reversed(saved):
            _restore(table, h, r, item)
        raise


models.copy = _NoTableCopies()
DynamoDBBackend.transact_write_items = transact_write_items

if __name__ == "__main__":
    moto_server.main()
