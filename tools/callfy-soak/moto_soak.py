"""moto for the soak and the benchmark: scripts/moto_server.py (DynamoDB calls applied one at a
time), with changes that keep moto's cost from growing with the table or the queue, and from
what DynamoDB does not spend. First, DynamoDB's TransactWriteItems.

moto 5 backs up every table a transaction names before applying it, as a deep copy of the whole
table, once per item of the transaction: a claim (7 items) copies the table seven times. Under the
soak's load that makes each transaction cost time in proportion to the table, and moto's resident
memory grows by gigabytes within minutes (freed copies fragment the heap). Here the transaction
backs up only the items it names and, if it fails, puts exactly those back: the same
all-or-nothing outcome, without the copies.

And changes to Query: moto 5 answers every Query (on the table or a GSI) by sorting the whole
table and filtering it, so each costs time in proportion to the table and the soak slows to a
crawl as carts accumulate. Here a table Query starts from its partition and a GSI Query from an
index of the GSI's hash key kept up to date on every write (each entry holds the item itself,
refreshed by every write), each hash key's items kept in the order moto sorts them in (the
GSI's range key, then the table's keys). A GSI Query with a range key takes only its page from
that order, as DynamoDB reads only the sort-key range it needs: the items after its
ExclusiveStartKey that meet its key condition, up to its Limit and one more (for moto to see
that there is a next page), and `_answer` runs moto's own loop over them (Limit, the 1 MB cap,
ScannedCount, LastEvaluatedKey, projections) without moto's passes over every candidate (the
hash key again, a sort, the start key again); other Queries go through moto's code with those
candidates. A page is not deep-copied: its items are only projected into new items or
serialised, under the server's DynamoDB lock (scripts/moto_server.py).
`CALLFY_MOTO_CHECK_QUERIES=1` also runs stock moto's Query (its own projection, size and sort)
and fails the call when the two disagree.

And what moto spends per item read that DynamoDB does not: moto 5.2 writes every answer
through a serializer driven by botocore's model, attribute by attribute in Python; here an
answer that carries items (GetItem, Query, Scan, BatchGetItem) is written by moto's own DynamoDB
JSON encoder, as moto did before 5.1 (the check compares the two). A projection of top-level
names keeps the stored attributes instead of turning the item into plain JSON once per name
(a projected number keeps its stored text, as an unprojected answer does), and an item's size
is summed in place. These patch moto 5.2.6's internals (scripts/requirements.txt pins it);
tools/callfy-soak/check_pages.py checks them against stock moto.

And two changes to SQS, where moto works out every attribute of a queue, its message counts
included (a pass over every message), to read one: for each message a ReceiveMessage looks at
(its retention period) and for each SendMessage (content-based deduplication). With a backlog of
thousands that made the queue cost grow with its square; here those two read the one setting.
"""
import bisect
import copy
import inspect
import json
import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))

import moto_server  # noqa: E402
import moto.dynamodb.models as models  # noqa: E402
import moto.dynamodb.models.table as table_module  # noqa: E402
import moto.dynamodb.models.dynamo_type as dynamo_type  # noqa: E402
import moto.dynamodb.comparisons as comparisons  # noqa: E402
import moto.dynamodb.responses as dynamo_responses  # noqa: E402
from moto.core.responses import ActionResult  # noqa: E402
from moto.dynamodb.models.utilities import dynamo_json_dump  # noqa: E402
from moto.dynamodb.models import DynamoDBBackend  # noqa: E402
from moto.dynamodb.models.dynamo_type import DynamoType, Item  # noqa: E402
from moto.dynamodb.models.table import Table  # noqa: E402
from moto.core.utils import unix_time  # noqa: E402
from moto.sqs.models import Queue, SQSBackend  # noqa: E402


class _NoTableCopies:
    """The `copy` module as moto's DynamoDB models see it: tables are not deep-copied."""

    def __getattr__(self, name):
        return getattr(copy, name)

    @staticmethod
    def deepcopy(x, memo=None):
        if isinstance(x, Table):
            return x
        return copy.deepcopy(x, memo)


class _PagesNotCopied:
    """The `copy` module as moto's Table sees it: a Query's page (a list of items) is not
    deep-copied before it is projected and serialised."""

    def __getattr__(self, name):
        return getattr(copy, name)

    @staticmethod
    def deepcopy(x, memo=None):
        if isinstance(x, list) and all(isinstance(i, Item) for i in x):
            return list(x)
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


def _sort_attrs(table, index):
    """moto's order for a Query on this GSI: its range key, then the table's hash and range key."""
    ranges = [k["AttributeName"] for k in index.schema if k["KeyType"] == "RANGE"]
    return ranges + [a for a in (table.hash_key_attr, table.range_key_attr) if a]


def _index_keys(table, item):
    """((GSI name, hash value), sort key) for each GSI this item is indexed under."""
    keys = []
    for index in table.global_indexes or []:
        hashes = [k["AttributeName"] for k in index.schema if k["KeyType"] == "HASH"]
        if len(hashes) != 1 or hashes[0] not in item.attrs:
            continue
        order = tuple(item.attrs.get(a) for a in _sort_attrs(table, index))
        # moto leaves an item without the GSI's range key out of the GSI's answers
        if any(v is None for v in order):
            continue
        keys.append(((index.name, item.attrs[hashes[0]]), order))
    return keys


def _first(entry):
    return entry[0]


def _reindex(table, h, r):
    """Brings the GSI index up to date for the item at (h, r), whatever happened to it."""
    idx = table.__dict__.setdefault("_callfy_idx", {})
    rev = table.__dict__.setdefault("_callfy_rev", {})
    for old, order in rev.pop((h, r), ()):
        members = idx.get(old)
        if members is None:
            continue
        i = bisect.bisect_left(members, order, key=_first)
        if i < len(members) and members[i][1] == (h, r):
            del members[i]
        if not members:
            del idx[old]
    item = _get(table, h, r)
    if item is None:
        return
    keys = _index_keys(table, item)
    # the item itself rides along, so a Query reads it without hashing its keys again; every
    # write that replaces or changes it comes through here
    for k, order in keys:
        bisect.insort(idx.setdefault(k, []), (order, (h, r), item), key=_first)
    if keys:
        rev[(h, r)] = keys


def _item_key(table, item):
    return item.hash_key, (item.range_key if table.has_range_key else None)


_put = Table.put_item
_delete = Table.delete_item
_update = DynamoDBBackend.update_item
_query = Table.query


def put_item(self, *args, **kwargs):
    item = _put(self, *args, **kwargs)
    _reindex(self, *_item_key(self, item))
    return item


def delete_item(self, hash_key, range_key):
    item = _delete(self, hash_key, range_key)
    _reindex(self, hash_key, range_key if self.has_range_key else None)
    return item


def update_item(self, table_name, key, *args, **kwargs):
    try:
        return _update(self, table_name, key, *args, **kwargs)
    finally:
        table = self.tables.get(table_name)
        if table is not None and table.hash_key_attr in key:
            h = DynamoType(key[table.hash_key_attr])
            r = DynamoType(key[table.range_key_attr]) if table.has_range_key and table.range_key_attr in key else None
            _reindex(table, h, r)


def _candidates(table, hash_key, index_name, hash_key_conditions, page=None):
    """The items a Query can match, or None when this shortcut does not apply."""
    if not index_name:
        if hash_key is None or hash_key_conditions and len(hash_key_conditions) > 1:
            return None
        part = table.items.get(hash_key)
        if part is None:
            return []
        return list(part.values()) if table.has_range_key else [part]
    index = next((i for i in table.global_indexes or [] if i.name == index_name), None)
    if index is None:
        return None
    hashes = [k["AttributeName"] for k in index.schema if k["KeyType"] == "HASH"]
    if len(hashes) != 1:
        return None
    wanted = hash_key
    for attr, value in hash_key_conditions or []:
        if attr == hashes[0]:
            wanted = value
    if wanted is None:
        return None
    if "_callfy_idx" not in table.__dict__:
        for item in list(_all(table)):
            _reindex(table, *_item_key(table, item))
    entries = table.__dict__["_callfy_idx"].get((index_name, wanted), [])
    if page is not None and len(_sort_attrs(table, index)) > (1 + bool(table.range_key_attr)):
        return _page(table, index, entries, page)
    return [item for _, _, item in entries]


# Key conditions whose matches start at the first item in this direction: the first item that
# fails ends them.
_FROM_START = {True: {"<", "<=", "LT", "LE"}, False: {">", ">=", "GT", "GE"}}


def _page(table, index, entries, q):
    """The candidates of one Query page from a GSI hash key's ordered items: after the
    ExclusiveStartKey, meeting the range key condition, at most Limit + 1."""
    forward = q["scan_index_forward"] is not False
    start = q["exclusive_start_key"]
    if start:
        order = tuple(DynamoType(start[a]) if a in start else None for a in _sort_attrs(table, index))
        if any(v is None for v in order):
            return None
        i = bisect.bisect_right(entries, order, key=_first) if forward else bisect.bisect_left(entries, order, key=_first) - 1
    else:
        i = 0 if forward else len(entries) - 1
    step = 1 if forward else -1
    ranges = [k["AttributeName"] for k in index.schema if k["KeyType"] == "RANGE"]
    comparison, objs, limit = q["range_comparison"], q["range_objs"], q["limit"]
    found, matched, tail_fails = [], False, False
    while 0 <= i < len(entries):
        item = entries[i][2]
        i += step
        value = item.attrs.get(ranges[0])
        if not comparison or (value is not None and value.compare(comparison, objs)):
            found.append(item)
            matched = True
            if limit and len(found) > limit:
                break
        elif matched or comparison in _FROM_START[forward]:
            # a key condition's matches are one run in key order; the item that ends it goes
            # along, so that moto, having a candidate past a full page, answers LastEvaluatedKey
            # as DynamoDB does when Limit stops it
            found.append(item)
            tail_fails = True
            break
    if not forward:
        found.reverse()  # in moto's (ascending) order, as every candidate list is
    page = _Page(found)
    page.tail_fails = tail_fails
    return page


class _Page(list):
    """A GSI Query page's candidates from `_page`: in moto's order, after the ExclusiveStartKey,
    all meeting the key condition but the last in the Query's direction when `tail_fails`."""

    tail_fails = False


def _answer(table, q, page):
    """moto's Table.query over one `_page`: the same loop (Limit, the 1 MB cap, the key
    condition, ScannedCount, LastEvaluatedKey) and the same projections, without the passes
    moto makes first over every candidate (the hash key again, a sort of items already in
    order, the ExclusiveStartKey again)."""
    index = table.get_index(q["index_name"])
    limit = q["limit"]
    ordered = page if q["scan_index_forward"] is not False else page[::-1]
    # `_page` has already held each candidate to the key condition
    meets = len(ordered) - 1 if page.tail_fails else len(ordered)
    results, result_size, scanned_count, last_evaluated_key = [], 0, 0, None
    for n, item in enumerate(ordered):
        size = item.size()
        if len(results) == limit or result_size + size > table_module.RESULT_SIZE_LIMIT:
            last_evaluated_key = table._get_last_evaluated_key(results[-1], q["index_name"])
            break
        if n < meets:
            results.append(item)
            result_size += size
            scanned_count += 1
    if (index.projection or {}).get("ProjectionType") not in (None, "ALL"):
        results = [index.project(r) for r in results]
    expressions = q["projection_expressions"]
    if expressions:
        names = _top_level(expressions)
        results = [r.project(expressions) if names is None else _keep(r, names) for r in results]
    return results, scanned_count, last_evaluated_key


_project = Item.project


def _top_level(projection_expressions):
    """The attribute names of a projection of top-level attributes only, else None."""
    if all(len(e) == 1 and "[" not in e[0] for e in projection_expressions):
        return [e[0] for e in projection_expressions]
    return None


def _keep(item, names):
    """A new Item of `item`'s attributes named in `names`, as stored, built as moto's own
    Item.__deepcopy__ builds one (without checking again the size of an item that passed on its
    write). The values are shared with the stored item: a projection only goes into an answer."""
    result = Item.__new__(Item)
    result.hash_key, result.range_key = item.hash_key, item.range_key
    result.attrs = dynamo_type.LimitedSizeDict.__new__(dynamo_type.LimitedSizeDict)
    dict.__init__(result.attrs)
    attrs = item.attrs
    for name in names:
        if name in attrs:
            dict.__setitem__(result.attrs, name, attrs[name])
    return result


def project(self, projection_expressions):
    """moto's Item.project, where moto turns the whole item into plain JSON once per expression
    and checks the size again per attribute, so that a page's cost grew with attributes x
    expressions. Nested paths and list indexes take moto's own way."""
    names = _top_level(projection_expressions)
    return _project(self, projection_expressions) if names is None else _keep(self, names)


# The DynamoDB reads whose answers carry items.
_ITEM_READS = {"Query", "Scan", "GetItem", "BatchGetItem"}
_DynamoResult = dynamo_responses.DynamoResult


class DynamoResult(ActionResult):
    """moto's DynamoResult, with a read's answer written by moto's own DynamoDB JSON encoder (as
    moto did before 5.1) instead of its shape-driven serializer, which walks every attribute of
    every item through botocore's model in Python and cost two thirds of a 500-item Query page;
    other answers take moto's way. The items are already in DynamoDB's wire form, so the body is
    the same (`CALLFY_MOTO_CHECK_QUERIES=1` serialises both ways and fails on a difference)."""

    def execute_result(self, context):
        if context.operation_model.name not in _ITEM_READS:
            return _DynamoResult(self.result).execute_result(context)
        body = dynamo_json_dump(self.result)
        headers = {"Content-Type": "application/x-amz-json-1.0"}
        if os.environ.get("CALLFY_MOTO_CHECK_QUERIES"):
            status, stock_headers, stock_body = _DynamoResult(self.result).execute_result(context)
            if status != 200 or stock_headers != headers or json.loads(stock_body) != json.loads(body):
                raise AssertionError(f"fast {context.operation_model.name} answer differs from moto's serializer's")
        return 200, headers, body


def _all(table):
    for part in table.items.values():
        if table.has_range_key:
            yield from part.values()
        else:
            yield part


_sorted_items = Table.sorted_items


def sorted_items(self, hash_key_attrs, range_key_attrs, items):
    if self.__dict__.get("_callfy_in_order"):
        return items
    return _sorted_items(self, hash_key_attrs, range_key_attrs, items)


_item_size = Item.size


def item_size(self):
    """moto's Item.size, with a string's size worked out in place (the same sum): it is taken
    for every item a Query looks at."""
    total = 0
    for key, value in self.attrs.items():
        total += len(key.encode("utf-8"))
        total += len(value.value.encode("utf-8")) if value.type == "S" else value.size()
    return total


_QUERY_ARGS = inspect.signature(_query)


def query(self, *args, **kwargs):
    q = _QUERY_ARGS.bind(self, *args, **kwargs).arguments
    # one range key condition (several are for multi-attribute keys): its page is taken here
    page = q if len(q.get("range_key_conditions") or []) <= 1 and not q.get("filter_kwargs") else None
    cands = _candidates(self, q.get("hash_key"), q.get("index_name"), q.get("hash_key_conditions"), page)
    if cands is None:
        return _query(self, *args, **kwargs)
    no_filter = isinstance(q.get("filter_expression"), (type(None), comparisons.OpDefault))
    if isinstance(cands, _Page) and not q.get("consistent_read") and no_filter:
        answer = _answer(self, q, cands)
    else:
        self.all_items = lambda: list(cands)
        # a GSI with a range key of its own: its candidates are already in the order moto sorts
        # them in (without one, moto sorts by the table's range key first)
        index = next((i for i in self.global_indexes or [] if i.name == q.get("index_name")), None)
        self.__dict__["_callfy_in_order"] = index is not None and any(
            k["KeyType"] == "RANGE" for k in index.schema
        )
        try:
            answer = _query(self, *args, **kwargs)
        finally:
            del self.all_items
            self.__dict__["_callfy_in_order"] = False
    if os.environ.get("CALLFY_MOTO_CHECK_QUERIES"):
        stock = _stock(_query, self, *args, **kwargs)
        if [normal(i.to_json()) for i in stock[0]] != [normal(i.to_json()) for i in answer[0]] or stock[1:] != answer[1:]:
            raise AssertionError(f"indexed Query disagrees with moto's on {self.name} {q.get('index_name')}")
    return answer


def _stock(f, *args, **kwargs):
    """`f` with moto's own projection, item size and sort (under the server's DynamoDB lock)."""
    patched = Item.project, Item.size, Table.sorted_items
    Item.project, Item.size, Table.sorted_items = _project, _item_size, _sorted_items
    try:
        return f(*args, **kwargs)
    finally:
        Item.project, Item.size, Table.sorted_items = patched


def normal(json_item):
    """An item's JSON with its sets in one order (a set has none) and its numbers as numbers
    (moto's projection rewrites a number's text through Decimal: 12.50 -> 12.5 stays 12.50, 1e2
    becomes 1E+2)."""
    from decimal import Decimal

    def norm(v):
        if isinstance(v, DynamoType):
            v = v.to_json()
        (t, x), = v.items()
        if t == "N":
            return {t: Decimal(x)}
        if t == "NS":
            return {t: sorted(Decimal(n) for n in x)}
        if t in ("SS", "BS"):
            return {t: sorted(x)}
        if t == "M":
            return {t: {k: norm(y) for k, y in x.items()}}
        if t == "L":
            return {t: [norm(y) for y in x]}
        return v

    return {k: {a: norm(v) for a, v in attrs.items()} for k, attrs in json_item.items()}


def _restore_and_reindex(table, h, r, item):
    _restore_plain(table, h, r, item)
    _reindex(table, h, r)


_restore_plain = _restore
_restore = _restore_and_reindex  # noqa: F811  (transact_write_items looks it up at call time)

models.copy = _NoTableCopies()
table_module.copy = _PagesNotCopied()
DynamoDBBackend.transact_write_items = transact_write_items
Table.put_item = put_item
Table.delete_item = delete_item
DynamoDBBackend.update_item = update_item
Table.query = query
dynamo_responses.DynamoResult = DynamoResult
Item.project = project
Item.size = item_size
Table.sorted_items = sorted_items

def is_message_valid_based_on_retention_period(self, queue_name, message):
    retain_until = int(self.get_queue(queue_name).message_retention_period) + message.sent_timestamp / 1000
    return retain_until > unix_time()


_sending = threading.local()
_queue_attributes = Queue.attributes


def _attributes(self):
    # SendMessage reads only this one (for a FIFO queue; a standard queue has none)
    if getattr(_sending, "on", False):
        return {"ContentBasedDeduplication": str(bool(self.content_based_deduplication)).lower()} if self.fifo_queue else {}
    return _queue_attributes.fget(self)


_send_message = SQSBackend.send_message


def send_message(self, *args, **kwargs):
    _sending.on = True
    try:
        return _send_message(self, *args, **kwargs)
    finally:
        _sending.on = False


SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period
Queue.attributes = property(_attributes)
SQSBackend.send_message = send_message

if __name__ == "__main__":
    moto_server.main()
