"""The HTTP surface of one replica: OpenAI endpoints, `/health`, `/metrics`, `/fleet/fault`.

Handlers turn requests into engine sequences and stream their tokens back; the fault middleware
applies hang / error-rate / reset behaviour before and after them. Crash is not handled here:
a crashed replica has no listening socket (see `Replica.set_fault`).
"""

import asyncio
import contextlib
import socket
import struct
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Handler

from . import protocol
from .engine import EngineRequest
from .faults import Fault, FaultError, FaultMode
from .protocol import ApiError, GenerationRequest, Kind
from .spec import Engine as EngineKind
from .tokens import embedding_vector, plan_output, tokenize

if TYPE_CHECKING:
    from .replica import Replica

INFERENCE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def build_app(replica: "Replica") -> web.Application:
    api = _Api(replica)
    app = web.Application(middlewares=[api.errors, api.faults])
    app.router.add_post("/v1/chat/completions", api.chat)
    app.router.add_post("/v1/completions", api.completions)
    app.router.add_post("/v1/embeddings", api.embeddings)
    app.router.add_get("/v1/models", api.models)
    app.router.add_get("/health", api.health)
    app.router.add_get("/v2/health/ready", api.health)  # Triton's readiness path
    app.router.add_get("/metrics", api.metrics)
    app.router.add_get("/prometheus/metrics", api.metrics)  # trtllm-serve's metrics path
    app.router.add_get("/fleet/fault", api.get_fault)
    app.router.add_post("/fleet/fault", api.post_fault)
    return app


class _InjectedResetError(Exception):
    """The reset_midstream fault fired; the connection is already gone."""


def _model_field(raw: bytes) -> str | None:
    try:
        model = protocol.model_of(protocol.parse_json(raw))
    except ApiError:
        return None
    return model


def reset_connection(request: web.BaseRequest) -> None:
    """Abort the TCP connection with an RST, as a crashing peer or a middlebox would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _Api:
    def __init__(self, replica: "Replica") -> None:
        self.replica = replica
        self.spec = replica.spec
        self.engine = replica.engine

    @web.middleware
    async def errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return web.json_response(exc.body, status=exc.status)

    @web.middleware
    async def faults(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/fleet/"):
            return await handler(request)  # the fault switch itself always answers
        if request.path not in INFERENCE_PATHS:
            await self._maybe_hang_or_fail(request)
            return await handler(request)
        self.replica.record(request.path, _model_field(await request.read()), request.headers)
        with self.replica.tracking_in_flight():
            await self._maybe_hang_or_fail(request)
            response = await handler(request)
        if self.replica.fault.mode is FaultMode.RESET_MIDSTREAM and not response.prepared:
            reset_connection(request)  # a non-streamed answer is lost entirely
            self.replica.count("resets_injected")
        return response

    async def _maybe_hang_or_fail(self, request: web.Request) -> None:
        if self.replica.fault.mode is FaultMode.HANG:
            await asyncio.Event().wait()  # until the client leaves or the replica stops
        if request.path.startswith("/v1/") and (status := self.replica.draw_error()):
            message = f"Injected fault: {status} from {self.replica.name}"
            err_type = "ServiceUnavailableError" if status == 503 else "InternalServerError"
            raise ApiError(status, message, err_type)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, Kind.CHAT)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, Kind.COMPLETION)

    async def _generate(self, request: web.Request, kind: Kind) -> web.StreamResponse:
        req = protocol.parse_generation(protocol.parse_json(await request.read()), kind)
        seq = self._sequence(req)
        self.engine.submit(seq)
        try:
            if req.stream:
                return await self._stream(request, req, seq)
            return await self._respond(req, seq)
        finally:
            self.engine.abort(seq)  # no-op when finished; frees the KV of a departed client

    def _sequence(self, req: GenerationRequest) -> EngineRequest:
        if req.model != self.spec.model and req.model not in self.spec.adapters:
            raise protocol.model_not_found(req.model)
        profile = self.spec.profile
        tokens = tokenize(req.prompt)
        room = profile.max_model_len - len(tokens)
        max_tokens = req.max_tokens or min(profile.default_max_tokens, room)
        if max_tokens > room or room < 1:
            raise protocol.bad_request(
                f"This model's maximum context length is {profile.max_model_len} tokens. "
                f"However, you requested {len(tokens) + max_tokens} tokens ({len(tokens)} in "
                f"the messages, {max_tokens} in the completion). Please reduce the length of "
                "the messages or completion."
            )
        planned, stops = plan_output(
            seed=self.replica.seed,
            model=req.model,
            prompt=req.prompt,
            max_tokens=max_tokens,
            ignore_eos=req.ignore_eos,
            min_fraction=profile.min_output_fraction,
        )
        adapter = req.model if req.model != self.spec.model else None
        return EngineRequest(
            model=req.model,
            adapter=adapter,
            tokens=list(tokens),
            num_prompt_tokens=len(tokens),
            planned=planned,
            stops_on_eos=stops,
            arrival=time.monotonic(),
        )

    def _head(self, prefix: str, model: str) -> dict[str, Any]:
        return {"id": self.replica.next_id(prefix), "created": int(time.time()), "model": model}

    async def _stream(
        self, request: web.Request, req: GenerationRequest, seq: EngineRequest
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": protocol.SSE_CONTENT_TYPE})
        await response.prepare(request)
        head = self._head("chatcmpl" if req.kind is Kind.CHAT else "cmpl", req.model)
        sent = received = 0

        async def send(event: bytes) -> None:
            nonlocal sent
            fault = self.replica.fault
            if fault.mode is FaultMode.RESET_MIDSTREAM and sent >= fault.after_chunks:
                reset_connection(request)
                self.replica.count("resets_injected")
                raise _InjectedResetError
            await response.write(event)
            sent += 1

        # a client that leaves mid-stream is normal: the caller's finally aborts the sequence
        self.replica.awaiting_first(+1)
        with contextlib.suppress(_InjectedResetError, ConnectionResetError):
            try:
                token = await seq.outbox.get()
            finally:
                self.replica.awaiting_first(-1)
            if token is not None and req.kind is Kind.CHAT:
                # as vLLM: the role chunk goes out with the first output, not before prefill
                role = protocol.stream_chunk(req.kind, head, "", None, role=True)
                await send(protocol.sse_event(role))
            while token is not None:
                received += 1
                finish = seq.finish_reason if received == len(seq.planned) else None
                chunk = protocol.stream_chunk(req.kind, head, f" {token}", finish)
                await send(protocol.sse_event(chunk))
                token = await seq.outbox.get()
            if seq.finish_reason == "abort":
                reset_connection(request)  # the server went away under the stream
                return response
            if req.include_usage:
                used = self._usage(seq)
                await send(protocol.sse_event(protocol.usage_chunk(req.kind, head, used)))
            await send(protocol.DONE_EVENT)
            self.replica.count("served")
        return response

    async def _respond(self, req: GenerationRequest, seq: EngineRequest) -> web.Response:
        tokens = []
        self.replica.awaiting_first(+1)  # counted as for a stream: prefill pacing's measure
        try:
            token = await seq.outbox.get()
        finally:
            self.replica.awaiting_first(-1)
        while token is not None:
            tokens.append(token)
            token = await seq.outbox.get()
        if seq.finish_reason == "abort" or seq.finish_reason is None:
            raise ApiError(503, "The engine stopped before the request finished.", "EngineError")
        head = self._head("chatcmpl" if req.kind is Kind.CHAT else "cmpl", req.model)
        text = "".join(f" {t}" for t in tokens)
        body = protocol.full_response(req.kind, head, text, seq.finish_reason, self._usage(seq))
        self.replica.count("served")
        return web.json_response(body)

    def _usage(self, seq: EngineRequest) -> dict[str, Any]:
        cached = seq.cached_prompt_tokens or 0
        return protocol.usage(seq.num_prompt_tokens, seq.num_generated, cached)

    async def embeddings(self, request: web.Request) -> web.Response:
        req = protocol.parse_embedding(protocol.parse_json(await request.read()))
        if req.model != self.spec.model and req.model not in self.spec.adapters:
            raise protocol.model_not_found(req.model)
        num_tokens = sum(len(tokenize(text)) for text in req.inputs)
        profile = self.spec.profile
        cost = profile.embed_overhead_s + profile.embed_per_token_s * num_tokens
        async with self.replica.embed_lock:  # one accelerator: embedding batches run in turn
            await asyncio.sleep(cost * self.engine.slow_factor * self.engine.seconds_per_unit)
        dim = profile.embedding_dim
        vectors = [embedding_vector(req.model, text, dim) for text in req.inputs]
        body = protocol.embeddings_response(self._head("embd", req.model), vectors, num_tokens)
        self.replica.count("served")
        return web.json_response(body)

    async def models(self, request: web.Request) -> web.Response:
        body = protocol.models_response(
            model=self.spec.model,
            adapters=self.spec.adapters,
            owned_by=str(self.spec.engine),
            created=int(time.time()),
            max_model_len=self.spec.profile.max_model_len,
        )
        return web.json_response(body)

    async def health(self, request: web.Request) -> web.Response:
        if self.spec.engine is EngineKind.LLAMACPP:
            return web.json_response({"status": "ok"})
        return web.Response(status=200)

    async def metrics(self, request: web.Request) -> web.Response:
        text = self.replica.metrics_text()
        return web.Response(body=text.encode(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def get_fault(self, request: web.Request) -> web.Response:
        return web.json_response(self.replica.fault.to_dict())

    async def post_fault(self, request: web.Request) -> web.StreamResponse:
        body = protocol.parse_json(await request.read())
        try:
            fault = Fault.from_dict(body)
        except FaultError as exc:
            raise protocol.bad_request(str(exc)) from exc
        # Answer before switching: a crash closes this very connection and cancels this handler,
        # so the switch runs in a replica-owned task that the cancellation cannot interrupt.
        response = web.json_response(fault.to_dict())
        await response.prepare(request)
        await response.write_eof()
        await asyncio.shield(self.replica.spawn(self.replica.set_fault(fault)))
        return response
