"""The official CloudEvents Python SDK (`cloudevents` on PyPI) against a running Runnel server.

Events are written by the SDK in structured mode, binary mode and as a batch (the SDK's JSON
format for each event, in a JSON array), published to `POST /v1/events`, pulled back through
a consumer group, read back with the SDK, and compared attribute by attribute, extensions and
data included.

Run by `crates/runnel-server/tests/cloudevents_python.rs` with the server's URL in
`RUNNEL_URL`; runs under pytest, or as a plain script.
"""

import json
import os
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

URL = os.environ.get("RUNNEL_URL", "http://127.0.0.1:8717")
FORMAT = JSONFormat()


def request(method, path, body=None, headers=None):
    req = urllib.request.Request(URL + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def send(message):
    status, body = request("POST", "/v1/events", message.body, dict(message.headers))
    assert status == 202, (status, body)
    return json.loads(body)


def make_group(domain):
    group = "py-" + uuid.uuid4().hex[:12]
    status, body = request(
        "PUT",
        f"/v1/groups/{group}",
        json.dumps({"filter": f"{domain}.*"}).encode(),
        {"content-type": "application/json"},
    )
    assert status == 201, (status, body)
    return group


def pull_all(group, count):
    """Pulls until `count` messages came back; acks them; returns the events read by the SDK."""
    events = []
    for _ in range(50):
        status, body = request(
            "POST",
            f"/v1/groups/{group}/pull",
            json.dumps({"max": 100, "wait_ms": 2000}).encode(),
            {"content-type": "application/json"},
        )
        assert status == 200, (status, body)
        messages = json.loads(body)["messages"]
        if messages:
            status, ack = request(
                "POST",
                f"/v1/groups/{group}/ack",
                json.dumps({"receipts": [m["receipt"] for m in messages]}).encode(),
                {"content-type": "application/json"},
            )
            assert status == 200, (status, ack)
        for message in messages:
            events.append(FORMAT.read(None, json.dumps(message["event"]).encode()))
        if len(events) >= count:
            return events
    raise AssertionError(f"only {len(events)} of {count} events came back")


def assert_same(sent, received):
    assert received.get_attributes() == sent.get_attributes(), (
        sent.get_attributes(),
        received.get_attributes(),
    )
    assert received.get_data() == sent.get_data(), (sent.get_data(), received.get_data())


def now():
    # Whole microseconds, as RFC 3339 carries them both ways.
    return datetime.now(timezone.utc)


def test_structured_mode_round_trips_with_extensions():
    group = make_group("sdkstructured")
    sent = CloudEvent(
        attributes={
            "type": "sdkstructured.sent",
            "source": "/python/sdk",
            "subject": "order-42",
            "time": now(),
            "datacontenttype": "application/json",
            "comexampleext": "value",
            "flag": True,
            "count": 7,
            "correlationid": "corr-1",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        },
        data={"amount": 12.5, "items": ["a", "b"], "nested": {"ok": True}},
    )
    ack = send(ce_http.to_structured(sent, FORMAT))
    assert ack["id"] == sent.get_id() and ack["duplicate"] is False
    (received,) = pull_all(group, 1)
    assert_same(sent, received)


def test_binary_mode_round_trips_json_text_and_bytes():
    group = make_group("sdkbinary")
    sent = [
        CloudEvent(
            attributes={
                "type": "sdkbinary.sent",
                "source": "/python/sdk",
                "time": now(),
                "datacontenttype": "application/json",
                "comexampleext": "café au lait, \"quoted\" 100%",
                "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            },
            data={"n": 1, "text": "héllo"},
        ),
        CloudEvent(
            attributes={
                "type": "sdkbinary.sent",
                "source": "/python/sdk",
                "time": now(),
                "datacontenttype": "text/plain",
                "partitionkey": "k1",
            },
            data="plain text, ünïcode",
        ),
        CloudEvent(
            attributes={
                "type": "sdkbinary.sent",
                "source": "/python/sdk",
                "time": now(),
                "datacontenttype": "application/octet-stream",
                "partitionkey": "k1",
            },
            data=bytes(range(256)),
        ),
    ]
    for event in sent:
        send(ce_http.to_binary(event, FORMAT))
    received = {e.get_id(): e for e in pull_all(group, len(sent))}
    for event in sent:
        assert_same(event, received[event.get_id()])


def test_batch_mode_round_trips_every_event():
    group = make_group("sdkbatch")
    sent = [
        CloudEvent(
            attributes={
                "type": "sdkbatch.sent",
                "source": "/python/sdk",
                "time": now(),
                "datacontenttype": "application/json",
                "seq": n,
            },
            data={"n": n},
        )
        for n in range(20)
    ]
    body = b"[" + b",".join(FORMAT.write(e) for e in sent) + b"]"
    status, answer = request(
        "POST", "/v1/events", body, {"content-type": "application/cloudevents-batch+json"}
    )
    assert status == 202, (status, answer)
    acks = json.loads(answer)
    assert [a["id"] for a in acks] == [e.get_id() for e in sent]
    received = {e.get_id(): e for e in pull_all(group, len(sent))}
    for event in sent:
        assert_same(event, received[event.get_id()])


if __name__ == "__main__":
    for name, test in list(globals().items()):
        if name.startswith("test_") and callable(test):
            test()
            print(f"{name} passed")
    print("3 passed, 0 failed")
