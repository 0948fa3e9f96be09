"""Simulated step services for the saga tests: an HTTP consumer (pull/ack) of group
`step-services` over `cmd.*`, which executes each command once by its id (the idempotency
key docs/sagas.md asks for), appends each execution to a log, and publishes the reply.

Usage: step_services.py BASE_URL EXECUTIONS_FILE
An order whose trigger data has "decline": true is declined at the charge step.
Survives the server going away (it is killed and restarted by the crash test)."""

import json
import sys
import time
import urllib.error
import urllib.request

BASE, LOG = sys.argv[1], sys.argv[2]
REPLIES = {
    "cmd.reserve": "inventory.reserved",
    "cmd.release": "inventory.released",
    "cmd.charge": "payment.charged",
    "cmd.refund": "payment.refunded",
    "cmd.ship": "shipping.shipped",
}


def call(method, path, body):
    data = json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, method=method)
    request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, None
    except (OSError, ValueError):
        return None, None


def until_ok(method, path, body, ok):
    while True:
        status, answer = call(method, path, body)
        if status in ok:
            return answer
        time.sleep(0.2)


def publish(event):
    request = urllib.request.Request(
        BASE + "/v1/events", data=json.dumps(event).encode(), method="POST"
    )
    request.add_header("content-type", "application/cloudevents+json")
    while True:
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                if response.status == 202:
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)


until_ok("PUT", "/v1/groups/step-services", {"filter": "cmd.*"}, (200, 201))
executed = set()
log = open(LOG, "a", buffering=1)
while True:
    answer = until_ok("POST", "/v1/groups/step-services/pull", {"max": 50, "wait_ms": 500}, (200,))
    receipts = []
    for message in answer["messages"]:
        event = json.loads(message["event"]) if isinstance(message["event"], str) else message["event"]
        command, data = event["type"], event.get("data") or {}
        if event["id"] not in executed:
            executed.add(event["id"])
            log.write(json.dumps({"id": event["id"], "type": command,
                                  "instance": event.get("correlationid"),
                                  "step": data.get("step")}) + "\n")
        reply_type = REPLIES[command]
        reply_data = {"done": command}
        if command == "cmd.charge" and (data.get("input") or {}).get("decline"):
            reply_type = "payment.declined"
            reply_data = {"class": "permanent", "reason": "card declined"}
        publish({"specversion": "1.0", "id": "reply-" + event["id"], "source": "test://services",
                 "type": reply_type, "correlationid": event.get("correlationid"),
                 "causationid": event["id"], "datacontenttype": "application/json",
                 "data": reply_data})
        receipts.append(message["receipt"])
    if receipts:
        call("POST", "/v1/groups/step-services/ack", {"receipts": receipts})
