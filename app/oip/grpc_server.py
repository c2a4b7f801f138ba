"""The Open Inference Protocol over gRPC: KServe v2's `inference.GRPCInferenceService`, on `AE_GRPC_PORT`.

It runs with grpc.aio on the event loop of the HTTP server, in the same process (started and stopped by the
app's lifespan, app.main), so a gRPC call shares everything with the REST routes: the registry, the batchers
(its images are batched together with HTTP requests of the same model), admission control (a refusal is
UNAVAILABLE with `retry-after` in the trailing metadata), API keys (metadata `authorization: Bearer <key>`;
ServerLive and ServerReady, the probes, need none) and the metrics (`ae_requests` with method `GRPC`, the RPC's
path as the route and the gRPC code as the status) and the access log. Errors get their code in
app.oip.grpc_errors. The stubs come from the vendored proto (app/oip/proto, Apache-2.0).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from app.engine.requests.jobs import NO_ACCOUNTING, Accounting
from app.engine.service import Service
from app.errors import InvalidRequest, NotReady, Unauthorized
from app.http.admission import Ticket
from app.http.security import key_matches
from app.oip.grpc_errors import grpc_status
from app.oip.inference import infer
from app.oip.model_map import PLATFORM, VERSION, find, is_ready
from app.oip.proto import grpc_predict_v2_pb2 as pb
from app.oip.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from app.oip.tensors import CONTENTS_FIELDS, InferRequest, Tensor, checked_shape, from_bytes, from_values

access_log = logging.getLogger("app.access")
logger = logging.getLogger("app.oip")
SERVICE_PATH = "/inference.GRPCInferenceService/"
SERVER_NAME = "ae-service"
SERVER_VERSION = "1.0.0"
EXTENSIONS = ["binary_tensor_data"]  # REST's binary-data extension; gRPC carries raw bytes natively
ResponseT = TypeVar("ResponseT")


class CallRecord:
    """What one call's access log line and metrics say: filled in as the call goes."""

    def __init__(self) -> None:
        self.model: str | None = None
        self.images: int | None = None
        self.error_type: str | None = None


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Each RPC reads what it needs from the app's state (`app.state`: settings, registry, metrics, drain,
    admission), as the REST routes do through their dependencies."""

    def __init__(self, state: Any) -> None:
        self.state = state

    # -- the RPCs --------------------------------------------------------------------------------------

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return await self.call("ServerLive", context, lambda record: self.live(), keyed=False)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return await self.call("ServerReady", context, lambda record: self.ready(), keyed=False)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        async def work(record: CallRecord) -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS)

        return await self.call("ServerMetadata", context, work)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        async def work(record: CallRecord) -> pb.ModelReadyResponse:
            registry = self.service().registry
            model = find(registry, request.name, request.version)
            record.model = model.model
            return pb.ModelReadyResponse(ready=is_ready(registry.entries.get(model.model)))

        return await self.call("ModelReady", context, work)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        async def work(record: CallRecord) -> pb.ModelMetadataResponse:
            model = find(self.service().registry, request.name, request.version)
            record.model = model.model
            meta = pb.ModelMetadataResponse(name=model.name, versions=[VERSION], platform=PLATFORM)
            for spec in model.inputs:
                meta.inputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
            for spec in model.outputs:
                meta.outputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
            return meta

        return await self.call("ModelMetadata", context, work)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        async def work(record: CallRecord) -> pb.ModelInferResponse:
            model = find(self.service().registry, request.model_name, request.model_version)
            admission = self.state.admission
            ticket = admission.admit(admission.key_of(model.model, SERVICE_PATH + "ModelInfer"))
            try:
                wanted = [output.name for output in request.outputs] or None
                job = InferRequest(read_inputs(request), wanted, request_id=request.id)
                service = self.service(CallAccounting(ticket, record))
                outputs = await infer(service, model, job, SERVICE_PATH + "ModelInfer")
            finally:
                ticket.finish(record.images or 0)
            return write_response(model.name, request.id, outputs)

        return await self.call("ModelInfer", context, work)

    # -- what every RPC shares -------------------------------------------------------------------------

    async def live(self) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ready(self) -> pb.ServerReadyResponse:
        registry = self.state.registry
        if registry is None or self.state.drain.draining:
            return pb.ServerReadyResponse(ready=False)
        reasons, _ = self.service().readiness()
        return pb.ServerReadyResponse(ready=not reasons)

    def service(self, accounting: Accounting = NO_ACCOUNTING) -> Service:
        registry = self.state.registry
        if registry is None:
            raise NotReady("the model registry is not loaded yet")
        return Service(registry, self.state.settings, self.state.metrics, accounting)

    def check_key(self, context: grpc.aio.ServicerContext) -> None:
        """The REST routes' rule (app.http.security) on the `authorization` metadata."""
        keys = self.state.settings.api_keys
        if not keys:
            return
        header = dict(context.invocation_metadata() or ()).get("authorization", "")
        scheme, _, token = str(header).partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("this call needs an API key: send the metadata authorization: Bearer <key>")
        if not key_matches(token.strip(), keys):
            raise Unauthorized("the API key is not valid")

    async def call(
        self,
        method: str,
        context: grpc.aio.ServicerContext,
        work: Callable[[CallRecord], Awaitable[ResponseT]],
        keyed: bool = True,
    ) -> ResponseT:
        """Run one RPC: its key, its work, its error as a gRPC status, its log line and metrics."""
        started = time.perf_counter()
        record = CallRecord()
        code = grpc.StatusCode.OK
        try:
            if keyed:
                self.check_key(context)
            return await work(record)
        except asyncio.CancelledError:  # the client cancelled or went away: grpc.aio cancels the handler
            code, record.error_type = grpc.StatusCode.CANCELLED, "client_closed_request"
            raise
        except Exception as exc:
            code, details, trailers = grpc_status(exc)
            record.error_type = dict(trailers).get("error-type", "internal_error")
            context.set_trailing_metadata(trailers)
            await context.abort(code, details)
            raise  # not reached: abort raises
        finally:
            self.observe(method, context, record, code, time.perf_counter() - started)

    def observe(
        self, method: str, context: grpc.aio.ServicerContext, record: CallRecord, code: grpc.StatusCode, seconds: float
    ) -> None:
        route = SERVICE_PATH + method
        self.state.metrics.observe_request(route, "GRPC", code.name, seconds, record.images)
        request_id = dict(context.invocation_metadata() or ()).get("x-request-id") or uuid.uuid4().hex
        access_log.info(
            "request",
            extra={
                "request_id": request_id,
                "method": "GRPC",
                "route": route,
                "path": route,
                "model": record.model,
                "images": record.images,
                "status": code.name,
                "duration_ms": round(seconds * 1000, 2),
                "error_type": record.error_type,
            },
        )


def read_inputs(request: pb.ModelInferRequest) -> list[Tensor]:
    """The input tensors: from `raw_input_contents` (one per input, in order) or each input's `contents`."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: give one per input",
            param="raw_input_contents",
        )
    tensors = []
    for index, item in enumerate(request.inputs):
        shape = checked_shape(list(item.shape), item.name)
        if raw:
            tensors.append(from_bytes(item.name, item.datatype, shape, raw[index]))
            continue
        field = CONTENTS_FIELDS.get(item.datatype, "")
        values = list(getattr(item.contents, field)) if field else []
        tensors.append(from_values(item.name, item.datatype, shape, values))
    return tensors


def write_response(name: str, request_id: str, outputs: list[Tensor]) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=name, model_version=VERSION, id=request_id)
    for tensor in outputs:
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        response.raw_output_contents.append(tensor.data.tobytes())
    return response


async def start_grpc_server(state: Any, host: str, port: int) -> grpc.aio.Server:
    """Serve the protocol on host:port (on the running event loop) until `server.stop`."""
    settings = state.settings
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),  # the REST body cap, for the same images
            ("grpc.max_send_message_length", -1),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(state), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    server.add_insecure_port(address)
    await server.start()
    logger.info("gRPC (Open Inference Protocol) on %s", address)
    return server


class CallAccounting:
    """The service's accounting for one call: the model that serves it is counted against its admission
    (as an HTTP request's record does, app.http.request_record) and kept, with the images, for the metrics."""

    def __init__(self, ticket: Ticket, record: CallRecord) -> None:
        self.ticket, self.record = ticket, record

    def serving(self, model: str, images: int) -> None:
        self.ticket.move_to(model)
        self.record.model, self.record.images = model, images
