"""Scenarios driven with the official RocketMQ 5 Python SDK (rocketmq-python-client 5.1.2).

The Rust integration tests start a real weir-sidecar and run one of these scenarios in a separate
process; each prints JSON lines on stdout (what it saw) and exits 0 only if the scenario held.
Usage: python clients.py <scenario> --endpoint HOST:PORT [options]
"""

import argparse
import json
import sys
import threading
import time

from rocketmq import (ClientConfiguration, ConsumeResult, Credentials, FilterExpression, Message,
                      MessageListener, Producer, PushConsumer, SimpleConsumer)


_SAY_LOCK = threading.Lock()


def say(**fields):
    """One JSON line on stdout; listener threads call it concurrently, so whole lines only."""
    line = json.dumps(fields) + "\n"
    with _SAY_LOCK:
        sys.stdout.write(line)
        sys.stdout.flush()


def config(args):
    return ClientConfiguration(args.endpoint, Credentials(args.access_key, args.secret_key))


def produce(args):
    """Sends --count messages with bodies <prefix>-<i>."""
    producer = Producer(config(args), (args.topic,), tls_enable=args.tls)
    producer.startup()
    try:
        for i in range(args.count):
            msg = Message()
            msg.topic = args.topic
            msg.body = f"{args.prefix}-{i}".encode()
            msg.tag = args.tag
            receipt = producer.send(msg)
            say(sent=receipt.message_id, body=f"{args.prefix}-{i}")
    finally:
        producer.shutdown()


class FailTwice(MessageListener):
    """Fails the first two deliveries of every message, then succeeds."""

    def __init__(self, want):
        self.want = want
        self.lock = threading.Lock()
        self.done = set()
        self.finished = threading.Event()

    def consume(self, message):
        attempt = message.delivery_attempt
        say(message=message.message_id, attempt=attempt, body=message.body.decode())
        if attempt < 3:
            return ConsumeResult.FAILURE
        with self.lock:
            self.done.add(message.message_id)
            if len(self.done) >= self.want:
                self.finished.set()
        return ConsumeResult.SUCCESS


def push_fail_twice(args):
    """A PushConsumer whose listener fails twice per message: each succeeds on attempt 3."""
    listener = FailTwice(args.count)
    started = time.monotonic()
    consumer = PushConsumer(config(args), args.group, listener, {args.topic: FilterExpression()})
    consumer.startup()
    say(started_in_s=round(time.monotonic() - started, 3))
    try:
        if not listener.finished.wait(args.timeout):
            say(error="timed out", done=len(listener.done))
            sys.exit(1)
    finally:
        consumer.shutdown()


class PoisonFails(MessageListener):
    """Always fails messages whose body starts with "poison"; stops after the body "last"."""

    def __init__(self):
        self.finished = threading.Event()

    def consume(self, message):
        body = message.body.decode()
        say(message=message.message_id, attempt=message.delivery_attempt, body=body)
        if body.startswith("poison"):
            return ConsumeResult.FAILURE
        if body == "last":
            self.finished.set()
        return ConsumeResult.SUCCESS


def push_fifo_poison(args):
    """A PushConsumer of a FIFO group: a message that always fails is retried locally, then
    forwarded to the dead-letter queue, which lets the rest of its message group through."""
    listener = PoisonFails()
    consumer = PushConsumer(config(args), args.group, listener, {args.topic: FilterExpression()})
    consumer.startup()
    try:
        if not listener.finished.wait(args.timeout):
            say(error="timed out")
            sys.exit(1)
    finally:
        consumer.shutdown()


def produce_fifo(args):
    """Sends --count messages of one message group: poison first, then <prefix>-<i>, then last."""
    producer = Producer(config(args), (args.topic,), tls_enable=args.tls)
    producer.startup()
    try:
        bodies = ["poison"] + [f"{args.prefix}-{i}" for i in range(args.count)] + ["last"]
        for body in bodies:
            msg = Message()
            msg.topic = args.topic
            msg.body = body.encode()
            msg.message_group = "job-1"
            say(sent=producer.send(msg).message_id, body=body)
    finally:
        producer.shutdown()


def simple_receive(args):
    """A SimpleConsumer that receives and acks until --count messages arrived, printing each body."""
    consumer = SimpleConsumer(config(args), args.group, {args.topic: FilterExpression()}, await_duration=5,
                              tls_enable=args.tls)
    consumer.startup()
    got = 0
    deadline = time.monotonic() + args.timeout
    try:
        # The first receive registers this consumer's position (a broadcast consumer starts at the
        # latest message); only then is it ready for what follows.
        for m in consumer.receive(32, 30):
            say(body=m.body.decode(), message=m.message_id, attempt=m.delivery_attempt)
            consumer.ack(m)
            got += 1
        say(ready=True)
        while got < args.count:
            if time.monotonic() > deadline:
                say(error="timed out", received=got)
                sys.exit(1)
            for m in consumer.receive(32, 30):
                say(body=m.body.decode(), message=m.message_id, attempt=m.delivery_attempt)
                consumer.ack(m)
                got += 1
    finally:
        consumer.shutdown()


def change_invisible(args):
    """Receive one message, change its invisible duration: the new handle acks, the old one is refused."""
    consumer = SimpleConsumer(config(args), args.group, {args.topic: FilterExpression()}, await_duration=5,
                              tls_enable=args.tls)
    consumer.startup()
    try:
        messages = []
        deadline = time.monotonic() + args.timeout
        while not messages and time.monotonic() < deadline:
            messages = consumer.receive(1, 30)
        m = messages[0]
        old = m.receipt_handle
        consumer.change_invisible_duration(m, 60)
        new = m.receipt_handle
        say(old_handle=old, new_handle=new)
        # Acknowledge with the retired handle first: the broker must refuse it.
        m.receipt_handle = old
        try:
            consumer.ack(m)
            say(old_ack="accepted")
        except Exception as e:  # the SDK raises on INVALID_RECEIPT_HANDLE
            say(old_ack="refused", error=str(e))
        m.receipt_handle = new
        consumer.ack(m)
        say(new_ack="accepted")
    finally:
        consumer.shutdown()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["produce", "produce-fifo", "push-fail-twice", "push-fifo-poison",
                                             "simple-receive", "change-invisible"])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", default="python")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--prefix", default="msg")
    parser.add_argument("--tag", default="py")
    parser.add_argument("--timeout", type=float, default=60)
    # TLS to the broker; the trusted CA comes from GRPC_DEFAULT_SSL_ROOTS_FILE_PATH.
    parser.add_argument("--tls", action="store_true")
    # Credentials: every request is signed (MQv2-HMAC-SHA1) when --access-key is set.
    parser.add_argument("--access-key", default="")
    parser.add_argument("--secret-key", default="")
    args = parser.parse_args()
    {
        "produce": produce,
        "produce-fifo": produce_fifo,
        "push-fail-twice": push_fail_twice,
        "push-fifo-poison": push_fifo_poison,
        "simple-receive": simple_receive,
        "change-invisible": change_invisible,
    }[args.scenario](args)


if __name__ == "__main__":
    main()
