"""Message format, a receiver under malformed traffic, the non-blocking sender, CURVE keys."""
from __future__ import annotations

import base64
import json
import time

import numpy as np
import pytest
import zmq

from conftest import free_port
from crackseg.stream import (MessageError, Receiver, Sender, decode_message, device_name, encode_jpeg,
                             encode_message, make_header, make_keys)


def frame_image(h: int = 48, w: int = 64, value: int = 0) -> np.ndarray:
    rng = np.random.default_rng(value)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def valid_message(device: str = "cam1", frame: int = 0, h: int = 48, w: int = 64) -> list[bytes]:
    header = make_header(device, frame, w, h, {"crack_ratio": 0.1, "components": 2}, "tiny")
    return encode_message(header, encode_jpeg(frame_image(h, w, frame)))


def malformed_messages(count: int, rng: np.random.Generator) -> list[tuple[str, list[bytes]]]:
    """``count`` broken messages cycling through every way to break one, with the reason each must get."""
    head, body = valid_message()
    good = json.loads(head)
    jpeg = base64.b64decode(body)

    def with_fields(**changes):
        h = {**good, **changes}
        return [json.dumps({k: v for k, v in h.items() if v is not ...}).encode(), body]

    kinds = [
        ("frame_count", lambda: [head]),
        ("frame_count", lambda: [head, body, body]),
        ("frame_count", lambda: [b""]),
        ("header_utf8", lambda: [b"\xff\xfe" + rng.bytes(int(rng.integers(1, 64))), body]),
        ("header_json", lambda: [b"{not json", body]),
        ("header_json", lambda: [b"[1, 2, 3]", body]),
        ("header_json", lambda: [b"[" * 50000, body]),
        ("version", lambda: with_fields(version=2)),
        ("version", lambda: with_fields(version=True)),
        ("version", lambda: with_fields(version="1")),
        ("version", lambda: with_fields(version=...)),
        ("header_field", lambda: with_fields(device="../etc")),
        ("header_field", lambda: with_fields(device="")),
        ("header_field", lambda: with_fields(device=123)),
        ("header_field", lambda: with_fields(frame=-1)),
        ("header_field", lambda: with_fields(frame=1.5)),
        ("header_field", lambda: with_fields(time="now")),
        ("header_field", lambda: with_fields(width=0)),
        ("header_field", lambda: with_fields(height=10 ** 9)),
        ("header_field", lambda: with_fields(width=...)),
        ("header_field", lambda: with_fields(stats={"x": "big"})),
        ("header_field", lambda: with_fields(stats=[1])),
        ("header_field", lambda: with_fields(model=["a"])),
        ("base64", lambda: [head, b"!!!not base64!!!"]),
        ("base64", lambda: [head, body[:-1]]),
        ("jpeg", lambda: [head, base64.b64encode(b"\x89PNG\r\n\x1a\n" + rng.bytes(64))]),
        ("jpeg", lambda: [head, base64.b64encode(jpeg[: len(jpeg) // 8])]),
        ("jpeg", lambda: [head, base64.b64encode(b"\xff\xd8" + rng.bytes(200))]),
        ("size_mismatch", lambda: with_fields(width=65)),
        # each frame below the receivers' limits (so ZeroMQ's MAXMSGSIZE lets it through), the total above
        ("oversized", lambda: [json.dumps({**good, "pad": "x" * 30_000}).encode(),
                               base64.b64encode(b"\xff\xd8" + bytes(50_000))]),
    ]
    return [(kinds[i % len(kinds)][0], kinds[i % len(kinds)][1]()) for i in range(count)]


def test_round_trip_and_validation():
    header, jpeg, image = decode_message(valid_message(frame=7))
    assert header["frame"] == 7 and header["device"] == "cam1" and header["version"] == 1
    assert header["stats"] == {"crack_ratio": 0.1, "components": 2} and header["model"] == "tiny"
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert jpeg.startswith(b"\xff\xd8")
    assert device_name("my host/01") == "my-host-01" and device_name("///") == "device"


def test_every_malformed_kind_gets_its_reason():
    rng = np.random.default_rng(0)
    for reason, frames in malformed_messages(30, rng):
        with pytest.raises(MessageError) as info:
            decode_message(frames, max_bytes=60_000)
        assert info.value.reason == reason, (reason, str(info.value))


def test_receiver_survives_1000_malformed_messages_then_gets_a_valid_one():
    receiver = Receiver(f"tcp://127.0.0.1:{free_port()}", max_bytes=90_000)
    context = zmq.Context.instance()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.setsockopt(zmq.SNDHWM, 10)  # small queues, so the draining below runs on every machine, not just some
    push.setsockopt(zmq.SNDBUF, 1 << 16)
    push.connect(receiver.address)
    rng = np.random.default_rng(1)
    bad = malformed_messages(1200, rng)

    def send(frames: list[bytes]) -> None:
        # 1300 messages overflow both high-water marks and the TCP buffers, so a blocking send would wait forever
        # for this same thread to receive (it hung CI once): drain the receiver instead.
        while True:
            try:
                return push.send_multipart(frames, flags=zmq.NOBLOCK)
            except zmq.Again:
                assert receiver.receive(timeout=0.05) is None  # only malformed messages are in flight yet

    try:
        for _, frames in bad:
            send(frames)
        for _ in range(100):  # random bytes too: any frame count, any content
            send([rng.bytes(int(rng.integers(0, 300))) for _ in range(int(rng.integers(1, 4)))])
        send(valid_message(frame=42))
        deadline = time.monotonic() + 30
        got = None
        while got is None and time.monotonic() < deadline:
            got = receiver.receive(timeout=1.0)
        assert got is not None and got.header["frame"] == 42
        assert sum(receiver.rejected.values()) == len(bad) + 100
        expected = {}
        for reason, _ in bad:
            expected[reason] = expected.get(reason, 0) + 1
        for reason, n in expected.items():
            assert receiver.rejected[reason] >= n, reason
        assert "rejected 1300" in receiver.summary()
    finally:
        push.close(linger=0)
        receiver.close()


def test_frame_above_maxmsgsize_is_refused_and_others_still_arrive():
    receiver = Receiver(f"tcp://127.0.0.1:{free_port()}", max_bytes=50_000)
    context = zmq.Context.instance()
    big, small = context.socket(zmq.PUSH), context.socket(zmq.PUSH)
    try:
        big.connect(receiver.address)
        big.send_multipart([b"{}", bytes(200_000)])  # above MAXMSGSIZE: ZeroMQ drops the peer, never buffers it
        small.connect(receiver.address)
        small.send_multipart(valid_message(frame=3))
        got = receiver.receive(timeout=10)
        assert got is not None and got.header["frame"] == 3
        assert receiver.receive(timeout=0.3) is None
    finally:
        big.close(linger=0)
        small.close(linger=0)
        receiver.close()


def test_sender_never_blocks_and_reconnects():
    address = f"tcp://127.0.0.1:{free_port()}"
    sender = Sender(address, queue=3)
    jpeg = encode_jpeg(frame_image())
    start = time.monotonic()
    for i in range(200):  # nobody listening: every send returns at once, oldest frames dropped
        sender.send(make_header("cam1", i, 64, 48), jpeg)
    assert time.monotonic() - start < 2.0
    assert sender.dropped >= 190 and sender.sent == 0
    receiver = Receiver(address)
    try:
        got, frame = None, 200
        deadline = time.monotonic() + 20
        while got is None and time.monotonic() < deadline:
            sender.send(make_header("cam1", frame, 64, 48), jpeg)
            frame += 1
            got = receiver.receive(timeout=0.1)
        assert got is not None and got.header["frame"] >= 197  # only the newest queued frames survive
        frames = [got.header["frame"]]
        for _ in range(5):
            sender.send(make_header("cam1", frame, 64, 48), jpeg)
            frame += 1
            message = receiver.receive(timeout=2.0)
            assert message is not None
            frames.append(message.header["frame"])
        assert frames == sorted(frames)
    finally:
        sender.close(timeout=0.5)
        receiver.close()


def test_curve_round_trip_and_unauthorized_clients_rejected(tmp_path):
    folders = make_keys(tmp_path / "keys", ["cam1"])
    strangers = make_keys(tmp_path / "other", ["cam1"])  # valid keys the PC does not know
    assert (folders["pc"] / "server.key_secret").stat().st_mode & 0o077 == 0
    address = f"tcp://127.0.0.1:{free_port()}"
    receiver = Receiver(address, curve_dir=folders["pc"])
    jpeg = encode_jpeg(frame_image())
    keyless, stranger, member = Sender(address), Sender(address, curve_dir=strangers["cam1"]), None
    try:
        for i in range(10):
            keyless.send(make_header("keyless", i, 64, 48), jpeg)
            stranger.send(make_header("stranger", i, 64, 48), jpeg)
            assert receiver.receive(timeout=0.1) is None
        assert receiver.receive(timeout=1.0) is None
        member = Sender(address, curve_dir=folders["cam1"])
        got = None
        deadline = time.monotonic() + 20
        while got is None and time.monotonic() < deadline:
            member.send(make_header("cam1", 1, 64, 48), jpeg)
            got = receiver.receive(timeout=0.2)
        assert got is not None and got.header["device"] == "cam1"
        assert "keyless" not in receiver.devices and "stranger" not in receiver.devices
    finally:
        for s in (keyless, stranger, member):
            if s is not None:
                s.close(timeout=0)
        receiver.close()


def test_make_keys_rejects_bad_names(tmp_path):
    with pytest.raises(ValueError, match="client name"):
        make_keys(tmp_path, ["../x"])
    with pytest.raises(FileNotFoundError, match="server.key_secret"):
        Receiver(f"tcp://127.0.0.1:{free_port()}", curve_dir=tmp_path / "missing")
