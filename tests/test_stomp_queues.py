"""STOMP ``/queue/Q`` and the ack modes, and transactions (SPEC §12; STOMP 1.2 "SUBSCRIBE ack
Header", "ACK", "NACK", "BEGIN", "COMMIT", "ABORT"), with stomp.py over WebSocket.

Each test uses one server and runs on both hubs (on Redis the queues are
streams in Redis even for one node; ``test_stomp_cluster.py`` has two).
"Nothing else arrived" is shown with a receipt, as in ``test_stomp.py``.
The messages that waited for a subscription come with it on one process and
just after its receipt on Redis (:func:`messages_and_receipt` takes both).
"""

from __future__ import annotations

import asyncio
import urllib.request

import pytest

from support import ServerFactory
from support.stomp import TIMEOUT, ClientFrame, RawStomp, StompPy
from wsplex.server import Server

STOMP = ("v12.stomp", "v11.stomp", "v10.stomp")


@pytest.fixture
async def server(start_server: ServerFactory) -> Server:
    return await start_server(protocols=STOMP)


async def stomp_py(server: Server) -> StompPy:
    client = StompPy(server)
    await client.connect()
    return client


async def nothing_else(client: StompPy) -> None:
    receipt = client.receipt_id()
    client.conn.begin(transaction="marker", headers={"receipt": receipt})
    await client.receipt(id=receipt)
    client.conn.abort(transaction="marker")


async def messages_and_receipt(client: StompPy, count: int, receipt: str) -> list[ClientFrame]:
    """``count`` MESSAGE frames and the RECEIPT ``receipt``, in whichever order they come."""
    messages: list[ClientFrame] = []
    receipted = False
    while len(messages) < count or not receipted:
        kind, frame = await asyncio.to_thread(client.events.get, timeout=TIMEOUT)
        assert frame is not None and kind in ("MESSAGE", "RECEIPT"), (kind, frame)
        if kind == "RECEIPT":
            assert frame.headers["receipt-id"] == receipt and not receipted
            receipted = True
        else:
            messages.append(frame)
    assert len(messages) == count
    return messages


async def test_round_robin_one_consumer_per_message(server: Server) -> None:
    producer, one, two = await stomp_py(server), await stomp_py(server), await stomp_py(server)
    await one.subscribe("/queue/work", id="a")
    await two.subscribe("/queue/work", id="b")
    for number in range(4):
        await producer.send("/queue/work", f"job {number}")
    assert [(await one.message()).body for _ in range(2)] == [b"job 0", b"job 2"]
    assert [(await two.message()).body for _ in range(2)] == [b"job 1", b"job 3"]
    await nothing_else(one)
    await nothing_else(two)
    message_headers = (await _one_more(producer, one)).headers
    assert message_headers["destination"] == "/queue/work"
    assert message_headers["from"] == producer.session
    for client in (producer, one, two):
        await client.disconnect()


async def _one_more(producer: StompPy, consumer: StompPy) -> ClientFrame:
    await producer.send("/queue/work", "one more")  # job 4: consumer one's turn again
    return await consumer.message()


async def test_messages_wait_for_a_consumer(server: Server) -> None:
    producer = await stomp_py(server)
    for number in range(3):
        await producer.send("/queue/later", f"m{number}", **{"x-kind": "early"})
    consumer = await stomp_py(server)
    consumer.conn.subscribe("/queue/later", id="1", headers={"receipt": "s"})
    messages = await messages_and_receipt(consumer, 3, "s")  # the waiting ones come with it
    assert {message.headers["x-kind"] for message in messages} == {"early"}
    assert [message.body for message in messages] == [b"m0", b"m1", b"m2"]
    await producer.disconnect()
    await consumer.disconnect()


async def test_waiting_messages_are_bounded(start_server: ServerFactory) -> None:
    server = await start_server(protocols=STOMP, stomp_queue_limit=2)
    producer = await stomp_py(server)
    for number in range(5):
        await producer.send("/queue/small", f"m{number}")
    consumer = await stomp_py(server)
    consumer.conn.subscribe("/queue/small", id="1", headers={"receipt": "s"})
    messages = await messages_and_receipt(consumer, 2, "s")
    assert [message.body for message in messages] == [b"m3", b"m4"]  # the oldest went
    await nothing_else(consumer)
    await producer.disconnect()
    await consumer.disconnect()


async def test_waiting_bytes_are_bounded(start_server: ServerFactory) -> None:
    """--stomp-queue-bytes: past it the oldest waiting messages go, the newest is kept."""
    server = await start_server(protocols=STOMP, stomp_queue_bytes=2500)
    producer = await stomp_py(server)
    for number in range(5):
        await producer.send("/queue/heavy", f"{number}" * 1000)  # a bit over 1,000 bytes each
    consumer = await stomp_py(server)
    consumer.conn.subscribe("/queue/heavy", id="1", headers={"receipt": "s"})
    messages = await messages_and_receipt(consumer, 2, "s")
    assert [message.body[:1] for message in messages] == [b"3", b"4"]
    await nothing_else(consumer)
    await producer.disconnect()
    await consumer.disconnect()


async def test_unacked_messages_go_to_another_consumer_when_theirs_leaves(server: Server) -> None:
    producer, leaver, stayer = await stomp_py(server), await stomp_py(server), await stomp_py(server)
    await leaver.subscribe("/queue/q", id="1", ack="client-individual")
    await producer.send("/queue/q", "first")
    first = await leaver.message()
    assert first.headers["ack"] == first.headers["message-id"]
    await stayer.subscribe("/queue/q", id="2", ack="client-individual")
    await leaver.drop()  # gone without ACK
    again = await stayer.message()
    assert (again.body, again.headers.get("redelivered")) == (b"first", "true")
    stayer.conn.ack(again.headers["ack"])
    await nothing_else(stayer)
    await producer.disconnect()
    await stayer.disconnect()


async def test_unsubscribe_gives_back_what_was_not_acked(server: Server) -> None:
    producer, one, two = await stomp_py(server), await stomp_py(server), await stomp_py(server)
    await one.subscribe("/queue/u", id="1", ack="client")
    await producer.send("/queue/u", "a")
    await one.message()
    await two.subscribe("/queue/u", id="2")
    receipt = one.receipt_id()
    one.conn.unsubscribe("1", headers={"receipt": receipt})
    await one.receipt(id=receipt)
    assert (await two.message()).headers.get("redelivered") == "true"
    for client in (producer, one, two):
        await client.disconnect()


async def test_nack_redelivers_to_another_consumer(server: Server) -> None:
    producer, picky, other = await stomp_py(server), await stomp_py(server), await stomp_py(server)
    await picky.subscribe("/queue/n", id="1", ack="client-individual")
    await other.subscribe("/queue/n", id="2", ack="client-individual")
    await producer.send("/queue/n", "x")
    message = await picky.message()
    picky.conn.nack(message.headers["ack"])
    again = await other.message()
    assert (again.body, again.headers["redelivered"]) == (b"x", "true")
    other.conn.ack(again.headers["ack"])
    await nothing_else(picky)
    for client in (producer, picky, other):
        await client.disconnect()


async def test_client_mode_acks_cumulatively(server: Server) -> None:
    producer, consumer, spare = await stomp_py(server), await stomp_py(server), await stomp_py(server)
    await consumer.subscribe("/queue/c", id="1", ack="client")
    for number in range(3):
        await producer.send("/queue/c", f"m{number}")
    messages = [await consumer.message() for _ in range(3)]
    consumer.conn.ack(messages[1].headers["ack"])  # acknowledges m0 and m1
    await nothing_else(consumer)
    await spare.subscribe("/queue/c", id="2")
    await consumer.drop()
    again = await spare.message()
    assert (again.body, again.headers["redelivered"]) == (b"m2", "true")
    await nothing_else(spare)
    await producer.disconnect()
    await spare.disconnect()


async def test_auto_mode_needs_no_ack(server: Server) -> None:
    producer, consumer, spare = await stomp_py(server), await stomp_py(server), await stomp_py(server)
    await consumer.subscribe("/queue/auto", id="1")
    await producer.send("/queue/auto", "done")
    assert "ack" not in (await consumer.message()).headers
    await spare.subscribe("/queue/auto", id="2")
    await consumer.drop()
    await nothing_else(spare)
    for client in (producer, spare):
        await client.disconnect()


# -- transactions -----------------------------------------------------------------------


async def test_sends_of_a_transaction_take_effect_at_commit(server: Server) -> None:
    producer, consumer = await stomp_py(server), await stomp_py(server)
    await consumer.subscribe("/queue/t", id="1")
    producer.conn.begin(transaction="tx1")
    await producer.send("/queue/t", "held", transaction="tx1")
    await producer.send("/queue/t", "direct")
    assert (await consumer.message()).body == b"direct"
    await nothing_else(consumer)
    receipt = producer.receipt_id()
    producer.conn.commit(transaction="tx1", headers={"receipt": receipt})
    await producer.receipt(id=receipt)
    assert (await consumer.message()).body == b"held"
    await producer.disconnect()
    await consumer.disconnect()


async def test_abort_drops_the_transaction(server: Server) -> None:
    producer, consumer = await stomp_py(server), await stomp_py(server)
    await consumer.subscribe("/queue/ab", id="1")
    producer.conn.begin(transaction="tx")
    await producer.send("/queue/ab", "never", transaction="tx")
    receipt = producer.receipt_id()
    producer.conn.abort(transaction="tx", headers={"receipt": receipt})
    await producer.receipt(id=receipt)
    await producer.send("/queue/ab", "after")
    assert (await consumer.message()).body == b"after"
    await producer.disconnect()
    await consumer.disconnect()


@pytest.mark.parametrize("commit", [True, False])
async def test_acks_of_a_transaction_take_effect_at_commit(server: Server, commit: bool) -> None:
    producer, consumer, spare = await stomp_py(server), await stomp_py(server), await stomp_py(server)
    await consumer.subscribe("/queue/ta", id="1", ack="client-individual")
    await producer.send("/queue/ta", "m")
    message = await consumer.message()
    consumer.conn.begin(transaction="tx")
    consumer.conn.ack(message.headers["ack"], transaction="tx")
    if commit:
        consumer.conn.commit(transaction="tx")
    await nothing_else(consumer)
    await spare.subscribe("/queue/ta", id="2")
    await consumer.drop()  # an open transaction is aborted with its connection
    if not commit:
        assert (await spare.message()).headers["redelivered"] == "true"
    await nothing_else(spare)
    await producer.disconnect()
    await spare.disconnect()


async def test_a_lone_consumers_unacked_messages_wait_in_their_order(server: Server) -> None:
    producer, consumer = await stomp_py(server), await stomp_py(server)
    await consumer.subscribe("/queue/order", id="1", ack="client-individual")
    for number in range(3):
        await producer.send("/queue/order", f"m{number}")
    for _ in range(3):
        await consumer.message()
    await consumer.drop()
    later = await stomp_py(server)
    later.conn.subscribe("/queue/order", id="2", headers={"receipt": "s"})
    again = await messages_and_receipt(later, 3, "s")
    assert [m.body for m in again] == [b"m0", b"m1", b"m2"]
    assert {m.headers["redelivered"] for m in again} == {"true"}
    await producer.disconnect()
    await later.disconnect()


@pytest.mark.parametrize("version", ["1.1", "1.0"])
async def test_older_versions_ack_by_message_id(server: Server, version: str) -> None:
    producer = await stomp_py(server)
    consumer = await RawStomp.open(server, f"v1{version[-1]}.stomp")
    await consumer.connect(**{"accept-version": version})
    await consumer.frame("SUBSCRIBE", {"id": "s", "destination": "/queue/old", "ack": "client"})
    await producer.send("/queue/old", "m")
    message = await consumer.next()
    assert message.command == "MESSAGE" and "ack" not in message  # 1.2 only
    ack = {"message-id": message.get("message-id") or "", "receipt": "acked"}
    if version == "1.1":
        ack["subscription"] = "s"
    await consumer.frame("ACK", ack)
    assert (await consumer.next()).get("receipt-id") == "acked"
    spare = await stomp_py(server)
    await spare.subscribe("/queue/old", id="2")
    await consumer.close()
    await nothing_else(spare)  # acknowledged: nothing to redeliver
    await producer.disconnect()
    await spare.disconnect()


async def test_stomp_10_unsubscribes_by_destination(server: Server) -> None:
    producer = await stomp_py(server)
    consumer = await RawStomp.open(server, "v10.stomp")
    await consumer.connect(**{"accept-version": "1.0"})
    await consumer.frame("SUBSCRIBE", {"destination": "/queue/ten"})
    await consumer.frame("UNSUBSCRIBE", {"destination": "/queue/ten", "receipt": "gone"})
    assert (await consumer.next()).get("receipt-id") == "gone"
    await producer.send("/queue/ten", "waits")
    await consumer.frame("SUBSCRIBE", {"destination": "/queue/ten", "id": "again"})
    message = await consumer.next()
    assert (message.body, message.get("subscription")) == (b"waits", "again")
    await producer.disconnect()
    await consumer.close()


async def test_metrics_count_sessions_queues_and_redeliveries(start_server: ServerFactory, hub: str) -> None:
    """On Redis the count of waiting messages is this node's view, looked at again every
    third of --redis-ttl: the figures are read until they agree (or the time is up)."""
    server = await start_server(protocols=STOMP, stomp_queue_limit=1, redis_ttl=1.0)
    producer, consumer = await stomp_py(server), await stomp_py(server)
    await consumer.subscribe("/queue/m", id="1", ack="client-individual")
    await producer.send("/queue/m", "x")
    message = await consumer.message()
    consumer.conn.nack(message.headers["ack"])
    await consumer.message()  # redelivered, and not acknowledged
    await producer.send("/queue/waiting", "a")
    await producer.send("/queue/waiting", "b")  # pushes out "a"
    url = f"http://127.0.0.1:{server.port}/metrics"
    expected = {
        "wsplex_stomp_sessions": "2.0", "wsplex_stomp_subscriptions": "1.0", "wsplex_stomp_queues": "2.0",
        "wsplex_stomp_queued": "1.0", "wsplex_stomp_unacked": "1.0",
        "wsplex_stomp_redeliveries_total": "1.0", "wsplex_stomp_queue_dropped_total": "1.0",
    }
    async with asyncio.timeout(TIMEOUT):
        while True:
            text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
            figures = dict(line.rsplit(" ", 1) for line in text.splitlines()
                           if line.startswith("wsplex_stomp_"))
            if figures == expected or hub == "memory":
                break
            await asyncio.sleep(0.1)  # Redis: until this node looks at the queues again
    assert figures == expected
    await producer.disconnect()
    await consumer.disconnect()


async def test_queues_per_node_are_bounded(start_server: ServerFactory) -> None:
    server = await start_server(protocols=STOMP, stomp_max_queues=1)
    producer = await stomp_py(server)
    await producer.send("/queue/first", "kept")
    consumer = await RawStomp.open(server)
    await consumer.connect()
    await consumer.frame("SUBSCRIBE", {"id": "1", "destination": "/queue/second"})
    error = await consumer.next()
    assert error.command == "ERROR" and "too many queues" in (error.get("message") or "")
    assert await consumer.closed() == 1002
    producer.conn.send("/queue/third", "refused")
    assert "too many queues" in (await producer.next("ERROR")).headers["message"]
