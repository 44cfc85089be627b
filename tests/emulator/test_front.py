"""The gRPC front process and its link to the engine: framing, answers to calls that
cannot be served, and the two processes living and dying together."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2
from tasks_emulator import EmulatorThread, RealClock
from tasks_emulator.calls import Api
from tasks_emulator.dispatch import HttpClient
from tasks_emulator.engine import Engine
from tasks_emulator.front import Front
from tasks_emulator.iam import Iam
from tasks_emulator.link import MAX_FRAME, METHODS, OVERSIZED, Link, pack_request
from tasks_emulator.oidc import TokenSigner

from .conftest import PARENT, client_for, start_cli, virtual_harness


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True


def _link() -> tuple[Link, list[tuple[int, int, bytes]], _Transport]:
    frames: list[tuple[int, int, bytes]] = []
    link = Link(lambda *frame: frames.append(frame), lambda: None)
    transport = _Transport()
    link.connection_made(transport)  # type: ignore[arg-type]
    return link, frames, transport


def test_frames_survive_any_split() -> None:
    """Frames written in one loop pass leave in one write, and are read back whole however
    the stream cuts them: byte by byte or all at once."""
    sent = [(1, 8, b"create"), (2, 0, b""), (3, 5, b"x" * 70_000)]

    async def write_all() -> bytes:
        link, _, transport = _link()
        for frame in sent:
            link.send(*frame)
        await asyncio.sleep(0)
        assert len(transport.written) == 1
        return transport.written[0]

    stream = asyncio.run(write_all())
    for chunk in (1, 7, len(stream)):
        reader, frames, _ = _link()
        for start in range(0, len(stream), chunk):
            reader.data_received(stream[start : start + chunk])
        assert frames == sent


def test_oversized_frame_is_answered_not_fatal() -> None:
    """A frame over the limit is dropped as it streams in and reported as OVERSIZED for
    its call, so the receiver answers that call with an error; the link stays open and
    the frames after it arrive whole. (Closing here took the whole emulator down.)"""
    reader, frames, transport = _link()
    length = MAX_FRAME + 1
    head = length.to_bytes(4, "big") + (7).to_bytes(4, "big") + b"\x0a"
    reader.data_received(head + b"\0" * 1000)
    assert frames == [(7, OVERSIZED, b"")]
    remaining = length - 5 - 1000
    chunk = b"\0" * (1024 * 1024)
    while remaining > len(chunk):
        reader.data_received(chunk)
        remaining -= len(chunk)
    after = (6).to_bytes(4, "big") + (8).to_bytes(4, "big") + b"\x00" + b"x"
    reader.data_received(b"\0" * remaining + after)
    assert frames == [(7, OVERSIZED, b""), (8, 0, b"x")]
    assert not transport.closed


@pytest.fixture
def api() -> Api:
    async def make() -> Api:
        clock, signer = RealClock(), TokenSigner()
        engine = Engine(clock, HttpClient(), signer)
        return Api(engine, Iam(engine, signer, clock))

    return asyncio.run(make())


def _call(api: Api, name: str, request: Any) -> tuple[int, bytes]:
    return api.answer(METHODS.index(name), pack_request("", request.SerializeToString()))


def test_answers_to_calls_that_cannot_be_served(api: Api) -> None:
    """An unknown method, a request that is not the method's message, and an engine error
    each get their status code; a good call gets the serialized response."""
    assert api.answer(len(METHODS), b"")[0] == grpc.StatusCode.UNIMPLEMENTED.value[0]
    for garbage in (b"\xff", pack_request("", b"\xff\xff")):
        code, message = api.answer(METHODS.index("GetQueue"), garbage)
        assert (code, message) == (
            grpc.StatusCode.INVALID_ARGUMENT.value[0],
            b"the request could not be parsed",
        )
    get = api.methods["GetQueue"]
    code, message = _call(api, "GetQueue", get.request(name="projects/p/locations/l/queues/q"))
    assert code == grpc.StatusCode.NOT_FOUND.value[0]
    assert message.startswith(b"Queue does not exist.")
    listing = api.methods["ListQueues"]
    code, body = _call(api, "ListQueues", listing.request(parent="projects/p/locations/l"))
    assert code == 0
    assert listing.response.FromString(body).queues == []


def _children(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children


def _front_of(process: subprocess.Popen[str]) -> int:
    for child in _children(process.pid):
        if b"tasks_emulator.front" in Path(f"/proc/{child}/cmdline").read_bytes():
            return child
    raise AssertionError("the emulator has no front process")


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True  # exited, waiting for its parent to reap it
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.process
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_front_stops_with_the_engine() -> None:
    """Ctrl-C stops both processes; an engine killed outright takes its front with it."""
    process, _ = start_cli("--log-level", "warning")
    front = _front_of(process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert _gone(front)

    process, _ = start_cli("--log-level", "warning")
    front = _front_of(process)
    process.kill()
    process.communicate(timeout=10)
    assert _gone(front), "the front outlived a killed engine"


@pytest.mark.process
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_engine_stops_when_its_front_dies() -> None:
    process, ready = start_cli("--log-level", "warning")
    try:
        client = client_for(ready.split("gRPC ", 1)[1].split(",", 1)[0])
        client.list_queues(parent="projects/p/locations/l")
        client.transport.close()
        os.kill(_front_of(process), signal.SIGKILL)
        _, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1
    assert "the gRPC front process exited" in err


@pytest.mark.process
def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process, _ = start_cli("--log-level", "warning", "--port", str(port))
        _, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} (gRPC)" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("front_process", [False, True], ids=["in-process", "front-process"])
def test_port_in_use_fails_the_start(front_process: bool) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        runner = EmulatorThread(port=port, keys_port=0, front_process=front_process)
        try:
            with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port} \\(gRPC\\)"):
                runner.start()
        finally:
            runner.stop()


class _Context:
    """Enough of a gRPC servicer context for the front's handler."""

    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise RuntimeError("aborted")  # as grpc.aio does: abort never returns


def test_front_refuses_a_request_larger_than_the_link_carries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The front answers that one call RESOURCE_EXHAUSTED and never sends it; the link
    carries on."""
    monkeypatch.setattr("tasks_emulator.front.MAX_PAYLOAD", 100)

    async def call(size: int) -> tuple[_Context, _Transport]:
        front = Front()
        link, _, transport = _link()
        front.link = link
        context = _Context()
        handle = front.handler(METHODS.index("CreateTask"))
        task = asyncio.ensure_future(handle(b"x" * size, context))
        await asyncio.sleep(0.01)
        if size <= 100:
            assert not task.done()  # waiting for the engine's answer
            front.on_frame(1, 0, b"answer")
            assert await task == b"answer"
        else:
            with pytest.raises(RuntimeError, match="aborted"):
                await asyncio.wait_for(task, 5)
        assert not transport.closed
        return context, transport

    context, transport = asyncio.run(call(200))
    assert context.aborted == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "The request (200 bytes) is larger than the 100 bytes the emulator can pass on.",
    )
    assert transport.written == []
    context, transport = asyncio.run(call(10))
    assert context.aborted is None
    assert len(transport.written) == 1


def test_an_oversized_answer_fails_only_its_own_call() -> None:
    """OVERSIZED for one call answers that call RESOURCE_EXHAUSTED; the calls waiting
    beside it still get their own answers."""

    async def run() -> tuple[tuple[int, bytes], asyncio.Future[tuple[int, bytes]]]:
        front = Front()
        loop = asyncio.get_running_loop()
        big, small = loop.create_future(), loop.create_future()
        front.pending.update({7: big, 8: small})
        front.on_frame(7, OVERSIZED, b"")
        assert not small.done()
        front.on_frame(8, 0, b"ok")
        return await big, small

    (code, message), small = asyncio.run(run())
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert message.startswith(b"The response is larger than the ")
    assert small.result() == (0, b"ok")


def test_an_answer_too_large_for_the_link_fails_only_that_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the real front process: an answer over what the link carries (made small
    here) is RESOURCE_EXHAUSTED naming both sizes, and the same emulator, front process
    included, goes on answering; a smaller answer to the same question passes."""
    monkeypatch.setattr("tasks_emulator.calls.MAX_PAYLOAD", 60_000)
    queue = f"{PARENT}/queues/big"
    for harness in virtual_harness(front_process=True):
        harness.queue("big")
        harness.client.pause_queue(name=queue)
        for _ in range(2):
            harness.task(queue, "http://127.0.0.1:9/", http={"body": b"x" * 40_000})
        full = {"parent": queue, "response_view": tasks_v2.Task.View.FULL}
        with pytest.raises(exceptions.ResourceExhausted) as caught:
            list(harness.client.list_tasks(request=full))
        assert "The ListTasks response (" in caught.value.message
        assert "bytes) is larger than the 60000 bytes" in caught.value.message
        emulator = harness.runner.emulator
        assert emulator is not None
        assert not emulator.front_lost.is_set()
        assert harness.client.get_queue(name=queue).name == queue
        assert len(list(harness.client.list_tasks(parent=queue))) == 2  # BASIC: no bodies
        assert len(list(harness.client.list_tasks(request={**full, "page_size": 1}))) == 2
