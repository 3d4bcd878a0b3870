"""Message format, a receiver under malformed traffic, the non-blocking sender, CURVE keys."""
from __future__ import annotations

import base64
import json
import os
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from conftest import free_port
import crackseg.stream as stream
from crackseg.stream import (FrameSaver, MessageError, Receiver, Sender, check_message, decode_message, device_name,
                             encode_jpeg, encode_message, jpeg_size, make_header, make_keys)


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


# ---------------------------------------------------------------------------------------------- hardening
def patch_size(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its frame header (SOF0) claiming ``width`` x ``height``: a decompression bomb in a few KB."""
    at = jpeg.index(b"\xff\xc0")
    out = bytearray(jpeg)
    out[at + 5:at + 7], out[at + 7:at + 9] = height.to_bytes(2, "big"), width.to_bytes(2, "big")
    return bytes(out)


def message_with(jpeg: bytes, width: int, height: int, device: str = "cam1", frame: int = 0, **extra) -> list[bytes]:
    header = {**make_header(device, frame, width, height), **extra}
    return [json.dumps(header).encode(), base64.b64encode(jpeg)]


@pytest.fixture
def no_decoding(monkeypatch):
    """Any pixel decoding fails the test: what must be refused is refused from the JPEG's header alone."""
    def refuse(*args, **kwargs):
        raise AssertionError("cv2.imdecode called on a message that the JPEG header already rules out")

    monkeypatch.setattr(stream.cv2, "imdecode", refuse)


def test_jpeg_size_reads_the_frame_header_of_baseline_progressive_and_grey_jpegs(no_decoding):
    import cv2

    image = frame_image(40, 72)
    for params, img in [([], image), ([cv2.IMWRITE_JPEG_PROGRESSIVE, 1], image),
                        ([], cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))]:
        ok, buf = cv2.imencode(".jpg", img, params)
        assert ok and jpeg_size(buf.tobytes()) == (72, 40)


def test_bombs_are_refused_before_any_pixel_is_decoded(no_decoding):
    small = encode_jpeg(frame_image())  # 64x48
    # the probe: a 30000x30000 frame header behind a message header claiming 64x48
    with pytest.raises(MessageError) as info:
        check_message(message_with(patch_size(small, 30000, 30000), 64, 48))
    assert info.value.reason == "size_mismatch"
    # header and JPEG agree, but on 16000x16000: above max_pixels (4096x4096 by default)
    with pytest.raises(MessageError) as info:
        check_message(message_with(patch_size(small, 16000, 16000), 16000, 16000))
    assert info.value.reason == "pixels"
    with pytest.raises(MessageError) as info:  # and a smaller cap
        check_message(valid_message(), max_pixels=64 * 48 - 1)
    assert info.value.reason == "pixels"
    # structure: no frame header, thousands of scans, truncated, 12-bit samples
    sof = small.index(b"\xff\xc0")
    sof_len = int.from_bytes(small[sof + 2:sof + 4], "big")
    for broken in [small[:sof] + small[sof + 2 + sof_len:],
                   small[:-2] + (b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + b"\x00" * 8) * 300 + b"\xff\xd9",
                   small[:-200],
                   small[:sof + 4] + b"\x0c" + small[sof + 5:]]:
        with pytest.raises(MessageError) as info:
            check_message(message_with(broken, 64, 48))
        assert info.value.reason == "jpeg", str(info.value)
    header, jpeg = check_message(valid_message())  # a good one still passes without decoding
    assert header["width"] == 64 and jpeg == base64.b64decode(valid_message()[1])


def test_unknown_header_fields_are_dropped():
    header, _, _ = decode_message(message_with(encode_jpeg(frame_image()), 64, 48, run="r1", evil="x" * 1000,
                                               nested={"a": [1, 2]}))
    assert header["run"] == "r1" and "evil" not in header and "nested" not in header
    assert set(header) <= set(stream.KNOWN_FIELDS)


def push_socket(address: str):
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(address)
    return push


def drain(receiver: Receiver, seconds: float, count: int = 0) -> list:
    """Messages received within ``seconds`` (or as soon as ``count`` arrived); then nothing more for 0.3 s."""
    got, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline and not (count and len(got) >= count):
        message = receiver.receive(timeout=0.1)
        if message is not None:
            got.append(message)
    if count:
        late = receiver.receive(timeout=0.3)
        assert late is None, f"one more than expected: {late.header}"
    return got


def test_devices_beyond_max_devices_are_refused_and_counted():
    receiver = Receiver(f"tcp://127.0.0.1:{free_port()}", max_devices=3)
    push = push_socket(receiver.address)
    try:
        for i in range(6):
            push.send_multipart(valid_message(f"cam{i}", 0))
        push.send_multipart(valid_message("cam0", 1))  # an admitted device keeps its place
        got = drain(receiver, 5.0, count=4)
        assert sorted((m.header["device"], m.header["frame"]) for m in got) == [
            ("cam0", 0), ("cam0", 1), ("cam1", 0), ("cam2", 0)]
        assert receiver.rejected["devices"] == 3 and set(receiver.devices) == {"cam0", "cam1", "cam2"}
    finally:
        push.close()
        receiver.close()


def test_status_line_summarises_beyond_20_devices():
    receiver = Receiver(f"tcp://127.0.0.1:{free_port()}")
    push = push_socket(receiver.address)
    try:
        for i in range(30):
            push.send_multipart(valid_message(f"truck-{i:03d}", 0))
        assert len(drain(receiver, 10.0, count=30)) == 30
        line = receiver.summary()
        assert line.startswith("30 devices: 30 frames") and len(line) < 300, line
        assert "truck-029:" not in line
    finally:
        push.close()
        receiver.close()


@pytest.mark.parametrize("width, height", [(64, 48), (2048, 1088)])  # the light decode lane and the large one
def test_a_slow_decode_holds_up_only_its_own_device(monkeypatch, width, height):
    """The slow device's decodes wait on an event the test sets only after the fast frame arrived: an ordering
    fact, whatever the machine's load (a receiver decoding in line would never hand the fast frame out)."""
    real, release, decoded = stream.decode_jpeg, threading.Event(), []

    def slow_for_one(header, jpeg):
        if header["device"] == "slow":
            release.wait(60)
            decoded.append(header["frame"])
        return real(header, jpeg)

    monkeypatch.setattr(stream, "decode_jpeg", slow_for_one)
    receiver = Receiver(f"tcp://127.0.0.1:{free_port()}")
    push = push_socket(receiver.address)
    slow = patch_size(encode_jpeg(frame_image()), width, height) if width * height > 64 * 48 else None
    try:
        for frame in (0, 1):
            push.send_multipart(message_with(slow, width, height, "slow", frame) if slow else
                                valid_message("slow", frame))
        time.sleep(0.1)
        push.send_multipart(valid_message("fast", 0))
        got = receiver.receive(timeout=30)
        assert got is not None and got.header["device"] == "fast"
        assert decoded == []  # handed out while the slow device's first decode was still held
        release.set()
        rest = drain(receiver, 30.0, count=2)
        assert [m.header["frame"] for m in rest] == [0, 1]  # the slow device's frames, still in order
    finally:
        release.set()  # never leave a decode thread waiting
        push.close()
        receiver.close()


def test_frame_saver_never_overwrites(tmp_path):
    jpeg = encode_jpeg(frame_image())
    saver = FrameSaver(tmp_path)
    try:
        first = saver.save(make_header("cam1", 0, 64, 48, run="runA"), jpeg)
        second = saver.save(make_header("cam1", 0, 64, 48, run="runB"), jpeg)  # same device and frame, new run
        assert first == "cam1/runA-00000000.jpg" and second == "cam1/runB-00000000.jpg"
        old = [saver.save(make_header("cam1", 5, 64, 48), jpeg) for _ in range(3)]  # no run (older sender)
        assert old == ["cam1/00000005.jpg", "cam1/00000005-1.jpg", "cam1/00000005-2.jpg"]
        (tmp_path / "cam1" / "runC-00000000.jpg").write_bytes(b"user's file")
        assert saver.save(make_header("cam1", 0, 64, 48, run="runC"), jpeg) == "cam1/runC-00000000-1.jpg"
        assert (tmp_path / "cam1" / "runC-00000000.jpg").read_bytes() == b"user's file"
    finally:
        saver.close()
    lines = [json.loads(line) for line in (tmp_path / "headers.jsonl").read_text().splitlines()]
    assert [line["file"] for line in lines] == [first, second, *old, "cam1/runC-00000000-1.jpg"]
    assert not list(tmp_path.rglob(".*"))
    with pytest.raises(FileExistsError):
        FrameSaver(tmp_path / "headers.jsonl")


def test_sender_stamps_its_run_id():
    a, b = Sender(f"tcp://127.0.0.1:{free_port()}"), Sender(f"tcp://127.0.0.1:{free_port()}")
    try:
        assert a.run != b.run and stream.DEVICE_PATTERN.fullmatch(a.run)
        a.send(make_header("cam1", 0, 64, 48), encode_jpeg(frame_image()))
        assert json.loads(a.pending[0][0])["run"] == a.run
    finally:
        a.close(timeout=0)
        b.close(timeout=0)


def public_key(path: Path) -> bytes:
    import zmq.auth

    return zmq.auth.load_certificate(path)[0]


def test_make_keys_keeps_the_server_key_and_adds_only_missing_clients(tmp_path):
    keys = tmp_path / "keys"
    make_keys(keys, ["cam1"])
    server = public_key(keys / "pc" / "server.key_secret")
    cam1 = public_key(keys / "cam1" / "client.key_secret")
    made = make_keys(keys, ["cam1", "cam2"])  # add a device to a deployed set
    assert set(made) == {"pc", "cam1", "cam2"}
    assert public_key(keys / "pc" / "server.key_secret") == server, "the deployed devices would be locked out"
    assert public_key(keys / "cam1" / "client.key_secret") == cam1
    assert public_key(keys / "cam2" / "server.key") == server
    assert {p.name for p in (keys / "pc" / "authorized_clients").iterdir()} == {"cam1.key", "cam2.key"}
    make_keys(keys, ["cam1"], new_server_key=True)
    renewed = public_key(keys / "pc" / "server.key_secret")
    assert renewed != server
    for client in ("cam1", "cam2"):  # every device's copy of the server key follows
        assert public_key(keys / client / "server.key") == renewed
    assert public_key(keys / "cam1" / "client.key_secret") == cam1


def test_secret_keys_are_owner_only_from_the_first_byte(tmp_path, monkeypatch):
    # No chmod after the fact: a file readable by others while it is written counts as leaked.
    monkeypatch.setattr(Path, "chmod", lambda self, mode: None)
    monkeypatch.setattr(os, "chmod", lambda *a, **k: None)
    old = os.umask(0o022)
    try:
        make_keys(tmp_path / "keys", [f"cam{i}" for i in range(20)])
    finally:
        os.umask(old)
    secrets_ = list((tmp_path / "keys").rglob("*.key_secret"))
    assert len(secrets_) == 21
    for path in secrets_:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for folder in [tmp_path / "keys", *(p for p in (tmp_path / "keys").rglob("*") if p.is_dir())]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_decoded_frames_waiting_for_a_slow_consumer_stay_within_a_budget():
    bomb = patch_size(encode_jpeg(frame_image()), 2048, 2048)  # 3 KB of JPEG, 12 MB once decoded
    for keep_images in (True, False):
        receiver = Receiver(f"tcp://127.0.0.1:{free_port()}", max_pixels=2048 * 2048, keep_images=keep_images)
        push = push_socket(receiver.address)
        try:
            for i in range(30):
                push.send_multipart(message_with(bomb, 2048, 2048, f"cam{i}"))
            time.sleep(1.0)  # all queued before the (slow) consumer looks
            got = drain(receiver, 20.0, count=30 - receiver.rejected["busy"]) if not keep_images else []
            if keep_images:
                first = receiver.receive(timeout=10)
                assert first is not None and first.image.shape == (2048, 2048, 3)
                # what was admitted before anything was handed out fits in 4 * max_bytes + 3 such images
                assert 1 <= receiver.rejected["busy"] <= 27, receiver.summary()
                got = [first] + drain(receiver, 20.0, count=29 - receiver.rejected["busy"])
                assert len(got) + receiver.rejected["busy"] == 30
            else:  # pixels dropped after decoding: nothing to hold, nothing refused
                assert receiver.rejected["busy"] == 0 and len(got) == 30 and all(m.image is None for m in got)
        finally:
            push.close()
            receiver.close()
