"""An OpenAI-compatible HTTP server (FastAPI) over a `Generator`.

Endpoints: ``POST /v1/completions``, ``POST /v1/chat/completions`` (both with ``stream: true`` as server-sent
events, ``data: [DONE]`` at the end), ``GET /v1/models``, ``GET /health``. Errors use OpenAI's JSON shape
``{"error": {"message", "type", "param", "code"}}`` with the usual status codes (400 bad request, 401 bad key,
404 unknown model, 413 body too large, 429 too many requests in flight).

One worker thread owns the model. Requests wait in a bounded queue; the worker takes as many waiting
requests as fit in ``max_batch_size`` sequences and decodes them as one batch (each with its own sampling
settings, budget and stop strings). A client that disconnects cancels its sequences at the next step.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from ..errors import XmodelError
from .engine import Generator
from .runtime import chat_prompt_ids
from .sampling import SamplingParams


@dataclass
class ServerLimits:
    max_body_bytes: int = 1 << 20          # request bodies larger than this get 413
    max_prompt_tokens: int | None = None   # default: the model's context minus one
    max_concurrent_requests: int = 16      # running + waiting; more get 429
    max_batch_size: int = 8                # sequences decoded together
    api_key: str | None = None             # if set, "Authorization: Bearer KEY" is required


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def response(self) -> JSONResponse:
        return JSONResponse(status_code=self.status, content={"error": {
            "message": self.message, "type": self.type, "param": self.param, "code": self.code}})


# ---- request bodies (OpenAI's fields; unknown fields are ignored, as OpenAI-compatible servers do) ---------

class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    n: int = Field(default=1, ge=1, le=16)
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: Any = None
    # Extensions that vLLM and llama.cpp's server accept too.
    top_k: int = Field(default=0, ge=0)
    repetition_penalty: float = Field(default=1.0, gt=0)


class CompletionRequest(_Common):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream_options: StreamOptions | None = None


# ---- the worker ---------------------------------------------------------------------------------------------

@dataclass
class Job:
    """One HTTP request: its prompts (one per choice), settings, and the way results get back to the loop."""

    prompts: list[list[int]]
    params: list[SamplingParams]
    loop: asyncio.AbstractEventLoop
    results: asyncio.Queue
    cancel: threading.Event = field(default_factory=threading.Event)

    def send(self, item) -> None:
        self.loop.call_soon_threadsafe(self.results.put_nowait, item)


class BatchWorker:
    """Owns the model in one thread; batches waiting jobs; at most `max_jobs` jobs admitted at a time."""

    def __init__(self, generator: Generator, max_batch_size: int, max_jobs: int):
        self.generator = generator
        self.max_batch_size = max_batch_size
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.slots = threading.BoundedSemaphore(max_jobs)
        self.cancelled_sequences = 0  # sequences stopped because their client went away (for monitoring)
        self.thread = threading.Thread(target=self._run, name="xmodel-generate", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        if not self.slots.acquire(blocking=False):
            raise APIError(429, "too many requests in flight; retry later", "rate_limit_error",
                           code="too_many_requests")
        self.jobs.put(job)

    def _run(self) -> None:
        while True:
            batch = [self.jobs.get()]
            size = len(batch[0].prompts)
            while True:  # add waiting jobs while they fit
                try:
                    job = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if size + len(job.prompts) > self.max_batch_size:
                    self.jobs.put(job)  # re-queued at the back; it runs in the next batch
                    break
                batch.append(job)
                size += len(job.prompts)
            self._run_batch([j for j in batch if not j.cancel.is_set()])
            for job in batch:
                if job.cancel.is_set():
                    job.send(("done", None))
                self.slots.release()

    def _run_batch(self, batch: list[Job]) -> None:
        if not batch:
            return
        prompts, params, cancels, owner = [], [], [], []
        for job in batch:
            for choice, (prompt, p) in enumerate(zip(job.prompts, job.params)):
                prompts.append(prompt)
                params.append(p)
                cancels.append(job.cancel)
                owner.append((job, choice))
        try:
            for outputs in self.generator.stream(prompts, params, cancels):
                for out in outputs:
                    job, choice = owner[out.index]
                    self.cancelled_sequences += out.finish_reason == "cancelled"
                    job.send(("step", (choice, out.text, out.finish_reason, out.token_id is not None)))
        except Exception as e:  # noqa: BLE001 — reported to every client of the batch, the worker lives on
            for job in batch:
                reason = str(e).splitlines()[0] if str(e) else ""
                job.send(("error", f"generation failed: {type(e).__name__}: {reason}"))
        else:
            for job in batch:
                job.send(("done", None))


# ---- the app ------------------------------------------------------------------------------------------------

class BodySizeLimit:
    """ASGI middleware: a request body over `limit` bytes (declared or streamed) gets 413, one that is not UTF-8
    (which JSON must be) 400.

    The body is read here (at most `limit` + one chunk) and replayed to the app, so an oversize body is
    refused before any JSON parsing, whatever its Content-Length says; FastAPI would answer a body it cannot
    decode with its own {"detail": …}, not the OpenAI error shape.
    """

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = APIError(413, f"request body exceeds {self.limit} bytes", code="request_too_large").response()
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await too_big(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending the body
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await too_big(scope, receive, send)
            if not message.get("more_body"):
                break
        try:
            b"".join(chunks).decode("utf-8")
        except UnicodeDecodeError as e:
            return await APIError(400, f"request body is not valid UTF-8 (byte {e.start})",
                                  code="invalid_json").response()(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def create_app(generator: Generator, model_name: str, limits: ServerLimits | None = None) -> FastAPI:
    limits = limits or ServerLimits()
    context = generator.max_context
    max_prompt = min(limits.max_prompt_tokens or context - 1, context - 1)
    worker = BatchWorker(generator, limits.max_batch_size, limits.max_concurrent_requests)
    created = int(time.time())
    app = FastAPI(title="xmodel", description="OpenAI-compatible API over an Xmodel checkpoint")
    app.state.worker = worker

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return exc.response()

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):  # unknown routes, wrong methods, unreadable bodies
        kind = "authentication_error" if exc.status_code == 401 else (
            "invalid_request_error" if exc.status_code < 500 else "server_error")
        return APIError(exc.status_code, str(exc.detail), kind).response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            return APIError(400, "request body is not valid JSON", code="invalid_json").response()
        param = ".".join(str(x) for x in first.get("loc", ())[1:]) or None
        return APIError(400, f"{param or 'body'}: {first.get('msg', 'invalid request')}", param=param).response()

    expected_authorization = f"Bearer {limits.api_key}".encode() if limits.api_key else None

    async def authorized(request: Request) -> None:
        if expected_authorization is None:
            return
        given = request.headers.get("authorization", "").encode("latin-1")  # the raw bytes (ASGI decodes latin-1)
        # Constant time: how long a refusal takes must not tell how much of the key was right.
        if not hmac.compare_digest(given, expected_authorization):
            raise APIError(401, "invalid API key", "authentication_error", code="invalid_api_key")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name}

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "xmodel", "max_model_len": context}]}

    def check_model(name: str) -> None:
        if name != model_name:
            raise APIError(404, f"The model `{name}` does not exist (this server serves `{model_name}`)",
                           param="model", code="model_not_found")

    def sampling(req: _Common, max_tokens: int | None, prompt_len: int) -> SamplingParams:
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(req, name):
                raise APIError(400, f"{name} is not supported (use repetition_penalty)", param=name)
        if req.logprobs:
            raise APIError(400, "logprobs are not supported", param="logprobs")
        if prompt_len > max_prompt:
            raise APIError(400, f"prompt has {prompt_len} tokens; this server accepts at most {max_prompt}",
                           param="messages" if isinstance(req, ChatRequest) else "prompt",
                           code="context_length_exceeded")
        room = context - prompt_len
        if max_tokens is not None and max_tokens > room:
            raise APIError(400, f"max_tokens {max_tokens} + prompt {prompt_len} tokens exceed the model's context "
                                f"of {context}", param="max_tokens", code="context_length_exceeded")
        stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
        try:
            return SamplingParams(max_new_tokens=max_tokens or room, temperature=req.temperature, top_p=req.top_p,
                                  top_k=req.top_k, repetition_penalty=req.repetition_penalty, stop=stop,
                                  seed=req.seed).validate()
        except XmodelError as e:
            raise APIError(400, str(e)) from None

    def encode(text: str) -> list[int]:
        return generator.encode(text)

    @app.post("/v1/completions", dependencies=[Depends(authorized)])
    async def completions(req: CompletionRequest, request: Request):
        check_model(req.model)
        if req.echo or req.suffix or (req.best_of or 1) > 1:
            raise APIError(400, "echo, suffix and best_of are not supported")
        prompt = req.prompt
        if isinstance(prompt, str):
            prompts = [encode(prompt)]
        elif prompt and all(isinstance(x, int) for x in prompt):
            prompts = [list(prompt)]
        elif prompt and all(isinstance(x, str) for x in prompt):
            prompts = [encode(p) for p in prompt]
        else:
            prompts = [list(p) for p in prompt]
        if not prompts or any(not p for p in prompts):
            raise APIError(400, "prompt is empty", param="prompt")
        vocab = generator.model.config.vocab_size
        if any(not 0 <= t < vocab for p in prompts for t in p):
            raise APIError(400, f"prompt token ids must be in [0, {vocab})", param="prompt")
        max_tokens = req.max_tokens if req.max_tokens is not None else 16  # OpenAI's default for completions
        params = [sampling(req, max_tokens, len(p)) for p in prompts]
        all_prompts = [p for p in prompts for _ in range(req.n)]
        all_params = [seeded(p, i) for p in params for i in range(req.n)]
        return await run_job(request, req, all_prompts, all_params, chat=False)

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)])
    async def chat_completions(req: ChatRequest, request: Request):
        check_model(req.model)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": message_text(m)}
                    for m in req.messages]
        try:
            ids = chat_prompt_ids(generator.tokenizer, messages)
        except XmodelError as e:
            raise APIError(400, str(e), param="messages") from None
        params = sampling(req, req.max_completion_tokens or req.max_tokens, len(ids))
        return await run_job(request, req, [ids] * req.n, [seeded(params, i) for i in range(req.n)], chat=True)

    async def run_job(request: Request, req: _Common, prompts, params, chat: bool):
        if len(prompts) > worker.max_batch_size:
            raise APIError(400, f"{len(prompts)} sequences (prompts × n) exceed this server's batch size of "
                                f"{worker.max_batch_size}", param="n")
        loop = asyncio.get_running_loop()
        job = Job(prompts, params, loop, asyncio.Queue())
        worker.submit(job)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        usage = {"prompt_tokens": sum(len(p) for p in prompts[::max(1, req.n)]) if not chat else len(prompts[0]),
                 "completion_tokens": 0}
        if req.stream:
            include_usage = chat and req.stream_options is not None and req.stream_options.include_usage
            events = sse(job, request, rid, chat, usage, include_usage)
            return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        texts, reasons = [""] * len(prompts), ["length"] * len(prompts)
        try:
            async for choice, text, reason, is_token in results(job, request):
                texts[choice] += text
                usage["completion_tokens"] += is_token
                if reason:
                    reasons[choice] = reason
        finally:
            job.cancel.set()  # no-op when finished; stops the work if this handler was cancelled
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": t}, "logprobs": None,
                        "finish_reason": r} for i, (t, r) in enumerate(zip(texts, reasons))]
            return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model_name,
                    "choices": choices, "usage": usage}
        choices = [{"index": i, "text": t, "logprobs": None, "finish_reason": r}
                   for i, (t, r) in enumerate(zip(texts, reasons))]
        return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model_name,
                "choices": choices, "usage": usage}

    async def results(job: Job, request: Request):
        """The job's (choice, text, finish_reason, is_token) items until it is done.

        Checks a few times a second whether the client is still there (writes to a closed socket do not always
        fail), and cancels the job when it is not.
        """
        last_check = time.monotonic()
        while True:
            try:
                kind, payload = await asyncio.wait_for(job.results.get(), timeout=0.25)
            except asyncio.TimeoutError:
                kind, payload = None, None
            if time.monotonic() - last_check >= 0.25:
                last_check = time.monotonic()
                if await request.is_disconnected():
                    job.cancel.set()
                    return
            if kind is None:
                continue
            if kind == "done":
                return
            if kind == "error":
                raise APIError(500, payload, "server_error")
            yield payload

    async def sse(job: Job, request: Request, rid: str, chat: bool, usage: dict, include_usage: bool):
        created = int(time.time())
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(choices, **extra):
            body = {"id": rid, "object": kind, "created": created, "model": model_name, "choices": choices, **extra}
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        try:
            if chat:
                yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                              "finish_reason": None} for i in range(len(job.prompts))])
            async for choice, text, reason, is_token in results(job, request):
                usage["completion_tokens"] += is_token
                if reason == "cancelled" or (not text and not reason):
                    continue
                if chat:
                    delta = {"content": text} if text else {}
                    yield chunk([{"index": choice, "delta": delta, "logprobs": None, "finish_reason": reason}])
                else:
                    yield chunk([{"index": choice, "text": text, "logprobs": None, "finish_reason": reason}])
            if include_usage:
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                yield chunk([], usage=usage)
            yield "data: [DONE]\n\n"
        except APIError as e:
            yield f"data: {json.dumps({'error': {'message': e.message, 'type': e.type, 'code': e.code}})}\n\n"
        finally:
            job.cancel.set()  # the client went away (or we are done): stop generating for it

    app.add_middleware(BodySizeLimit, limit=limits.max_body_bytes)
    return app


def seeded(params: SamplingParams, choice: int) -> SamplingParams:
    """The i-th of n choices: a different sample stream, reproducible when a seed is given."""
    from dataclasses import replace

    return params if params.seed is None else replace(params, seed=params.seed + choice)


def message_text(message: ChatMessage) -> str:
    """A message's text; content given as parts must be text parts."""
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    texts = []
    for part in message.content:
        if part.get("type") != "text":
            raise APIError(400, f"content part of type {part.get('type')!r} is not supported (text only)",
                           param="messages")
        texts.append(str(part.get("text", "")))
    return "".join(texts)
