"""A real local HTTP server speaking the OpenAI REST API, for tests through the official `openai` client.

    server = FakeOpenAI(answer=lambda body: "#thereason: ok\\n#thescore: 1").start()
    client = openai.OpenAI(base_url=server.base_url, api_key="EMPTY")
    ...
    server.stop()

Scripted answers (a function of the request body, which names the `model`), injectable failures (deterministic by
request number), slow replies and counters (`count(route)`, `posts()`, `max_in_flight`). One handler class
dispatches on `FakeOpenAI.routes`, a dict {(method, path template): handler}; a template may hold parameters
(`/v1/fine_tuning/jobs/{job_id}`), passed to the handler as keyword arguments: `def h(self, body, path, **params)`.

Fine-tuning: `POST /v1/files` (multipart, as the client sends it), `POST /v1/fine_tuning/jobs`, `GET .../jobs`,
`GET .../jobs/{id}` (each poll advances validating_files -> queued -> running -> succeeded; `job_polls` polls in
all, or `failed` with `job_error` as a moderation rejection does), `GET .../jobs/{id}/events`. Moderation:
`POST /v1/moderations` flags the categories `flag(text)` returns.
"""

import email.parser
import email.policy
import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Route = Callable[..., tuple[int, dict]]
CHAT = ("POST", "/v1/chat/completions")
FILES = ("POST", "/v1/files")
JOBS = ("POST", "/v1/fine_tuning/jobs")
JOB_LIST = ("GET", "/v1/fine_tuning/jobs")
JOB = ("GET", "/v1/fine_tuning/jobs/{job_id}")
EVENTS = ("GET", "/v1/fine_tuning/jobs/{job_id}/events")
MODERATIONS = ("POST", "/v1/moderations")
MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
# The message OpenAI's fine-tuning moderation gives when it blocks a training file.
MODERATION_REJECTION = (
    "The job failed due to an unsafe training file. This training file was blocked by our moderation system because "
    "it contains too many examples that violate OpenAI's usage policies, or because it attempts to create model "
    "outputs that violate OpenAI's usage policies."
)


def default_answer(body: dict) -> str:
    return "#thereason: scripted answer.\n#thescore: 1"


def fail_fraction(fraction: float, statuses: tuple[int, ...] = (429, 500)) -> Callable[[int], int | None]:
    """Request n (1-based) fails when the running count floor(n * fraction) steps up: exactly `fraction` of the
    requests fail, spread evenly (so a retried request soon succeeds), alternating the given statuses."""

    def status(n: int) -> int | None:
        failures = int(n * fraction)
        return statuses[failures % len(statuses)] if failures > int((n - 1) * fraction) else None

    return status


def template_regex(template: str) -> re.Pattern:
    return re.compile("^" + re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$")


class FakeOpenAI:
    def __init__(
        self,
        answer: Callable[[dict], str] = default_answer,
        failure: Callable[[int], int | None] = lambda n: None,
        delay: Callable[[int], float] = lambda n: 0.0,
        usage: bool = True,
        job_polls: int = 4,
        job_error: str | None = None,
        flag: Callable[[str], list[str]] = lambda text: [],
    ) -> None:
        self.answer, self.failure, self.delay, self.usage = answer, failure, delay, usage
        self.job_polls, self.job_error, self.flag = job_polls, job_error, flag
        self.routes: dict[tuple[str, str], Route] = {
            CHAT: self.chat_completions,
            FILES: self.upload_file,
            JOBS: self.create_job,
            JOB_LIST: self.list_jobs,
            JOB: self.retrieve_job,
            EVENTS: self.job_events,
            MODERATIONS: self.moderations,
        }
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, body) of every request, failed ones too
        self.files: dict[str, dict] = {}
        self.jobs: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        self.httpd: ThreadingHTTPServer | None = None

    # ---- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> "FakeOpenAI":
        handler = type("Handler", (OpenAIHandler,), {"app": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)  # port 0: the OS picks a free one
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def count(self, route: tuple[str, str] = CHAT) -> int:
        """Requests received on `route` (a path template; failed requests included)."""
        method, pattern = route[0], template_regex(route[1])
        with self.lock:
            return sum(m == method and bool(pattern.match(p.split("?")[0])) for m, p, _ in self.requests)

    def posts(self) -> int:
        """Every POST received (uploads, job creations, completions, moderations): write calls and paid calls."""
        with self.lock:
            return sum(m == "POST" for m, _, _ in self.requests)

    # ---- dispatch -------------------------------------------------------------------------------------------------

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for (m, template), route in self.routes.items():
            found = template_regex(template).match(path.split("?")[0])
            if m == method and found:
                return route, found.groupdict()
        return None

    def handle(self, method: str, path: str, body: dict) -> tuple[int, dict, float]:
        """(status, JSON body, seconds to wait before replying) of one request."""
        with self.lock:
            self.requests.append((method, path, body))
            n = sum((m, p) == (method, path) for m, p, _ in self.requests)
        matched = self.match(method, path)
        if matched is None:
            return 404, error_body(f"no route {method} {path}", "not_found"), 0.0
        status = self.failure(n)
        if status is not None:
            return status, error_body(f"injected failure on request {n}", "server_error"), 0.0
        route, params = matched
        code, payload = route(body, path, **params)
        return code, payload, self.delay(n)

    # ---- chat -----------------------------------------------------------------------------------------------------

    def chat_completions(self, body: dict, path: str) -> tuple[int, dict]:
        content = self.answer(body)
        prompt_chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
        payload: dict[str, Any] = {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "judge"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
        }
        if self.usage:
            prompt_tokens, completion_tokens = prompt_chars // 4 + 1, len(content) // 4 + 1
            payload["usage"] = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
        return 200, payload

    # ---- files and fine-tuning jobs -------------------------------------------------------------------------------

    def upload_file(self, body: dict, path: str) -> tuple[int, dict]:
        upload = body.get("file")
        if not isinstance(upload, dict) or body.get("purpose") != "fine-tune":
            return 400, error_body("expected a multipart upload with file and purpose=fine-tune", "invalid_request")
        with self.lock:
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = {"filename": upload["filename"], "content": upload["content"]}
        return 200, {
            "id": file_id,
            "object": "file",
            "bytes": len(upload["content"].encode()),
            "created_at": int(time.time()),
            "filename": upload["filename"],
            "purpose": "fine-tune",
            "status": "processed",
        }

    def create_job(self, body: dict, path: str) -> tuple[int, dict]:
        with self.lock:
            if body.get("training_file") not in self.files:
                return 400, error_body(f"invalid training_file: {body.get('training_file')}", "invalid_request")
            job_id = f"ftjob-{len(self.jobs) + 1}"
            content = self.files[body["training_file"]]["content"]
            hyper = ((body.get("method") or {}).get("supervised") or {}).get("hyperparameters") or {}
            hyper = hyper or body.get("hyperparameters") or {}
            epochs = hyper.get("n_epochs") if isinstance(hyper.get("n_epochs"), int) else 3
            self.jobs[job_id] = {
                "id": job_id,
                "body": body,
                "polls": 0,
                "status": "validating_files",
                "n_epochs": epochs,
                "total_tokens": (len(content) // 4 + 1) * epochs,
                "events": [],
                "created_at": int(time.time()),
            }
            self.add_event(self.jobs[job_id], f"Validating training file: {body['training_file']}")
            return 200, self.job_object(self.jobs[job_id])

    def list_jobs(self, body: dict, path: str) -> tuple[int, dict]:
        with self.lock:
            jobs = [self.job_object(j) for j in reversed(self.jobs.values())]
        return 200, {"object": "list", "data": jobs, "has_more": False}

    def retrieve_job(self, body: dict, path: str, job_id: str) -> tuple[int, dict]:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return 404, error_body(f"no job {job_id}", "invalid_request")
            if job["status"] not in ("succeeded", "failed"):
                self.advance(job)
            return 200, self.job_object(job)

    def advance(self, job: dict) -> None:
        """One poll of a live job: validating_files, queued, running..., then succeeded or failed."""
        job["polls"] += 1
        k, last = job["polls"], max(self.job_polls, 1)
        if k >= last:
            job["status"] = "failed" if self.job_error else "succeeded"
            self.add_event(
                job, self.job_error or "The job has successfully completed", "error" if self.job_error else "info"
            )
        elif k >= 3:
            if job["status"] != "running":
                self.add_event(job, "Fine-tuning job started")
            job["status"] = "running"
            step = k - 2
            self.add_event(job, f"Step {step}: training loss=0.{step}", data={"step": step, "train_loss": 0.1 * step})
        else:
            job["status"] = ("validating_files", "queued")[k - 1]

    def job_object(self, job: dict) -> dict:
        body, status = job["body"], job["status"]
        done = status == "succeeded"
        running = max(job["polls"] - 2, 0) / max(self.job_polls - 2, 1)
        return {
            "id": job["id"],
            "object": "fine_tuning.job",
            "created_at": job["created_at"],
            "model": body["model"],
            "training_file": body["training_file"],
            "status": status,
            "hyperparameters": {"n_epochs": job["n_epochs"], "batch_size": 1, "learning_rate_multiplier": 2.0},
            "fine_tuned_model": f"ft:{body['model']}:fts-test:{body.get('suffix') or 'model'}:{job['id']}"
            if done
            else None,
            "trained_tokens": job["total_tokens"]
            if done
            else (int(job["total_tokens"] * running) if status == "running" else None),
            "error": {"code": "invalid_training_file", "message": self.job_error, "param": "training_file"}
            if status == "failed"
            else None,
            "organization_id": "org-test",
            "result_files": [],
            "seed": body.get("seed") or 0,
            "finished_at": int(time.time()) if status in ("succeeded", "failed") else None,
        }

    def add_event(self, job: dict, message: str, level: str = "info", data: dict | None = None) -> None:
        job["events"].append(
            {
                "id": f"ftevent-{job['id']}-{len(job['events']) + 1}",
                "object": "fine_tuning.job.event",
                "created_at": int(time.time()),
                "level": level,
                "message": message,
                "data": data,
                "type": "metrics" if data else "message",
            }
        )

    def job_events(self, body: dict, path: str, job_id: str) -> tuple[int, dict]:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return 404, error_body(f"no job {job_id}", "invalid_request")
            events = list(reversed(job["events"]))  # newest first, as the API lists them
        return 200, {"object": "list", "data": events, "has_more": False}

    # ---- moderation -----------------------------------------------------------------------------------------------

    def moderations(self, body: dict, path: str) -> tuple[int, dict]:
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
        results = []
        for text in inputs:
            flagged = set(self.flag(text))
            results.append(
                {
                    "flagged": bool(flagged),
                    "categories": {c: c in flagged for c in MODERATION_CATEGORIES},
                    "category_scores": {c: 0.9 if c in flagged else 0.01 for c in MODERATION_CATEGORIES},
                    "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES},
                }
            )
        return 200, {"id": f"modr-{len(self.requests)}", "model": body.get("model", "moderation"), "results": results}


def error_body(message: str, kind: str) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def parse_multipart(content_type: str, raw: bytes) -> dict:
    """multipart/form-data -> {field: text, file field: {"filename", "content"}} (what the client's upload sends)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        text = part.get_payload(decode=True).decode("utf-8")
        filename = part.get_filename()
        fields[name] = {"filename": filename, "content": text} if filename is not None else text
    return fields


class OpenAIHandler(BaseHTTPRequestHandler):
    app: FakeOpenAI  # set on the per-server subclass made in FakeOpenAI.start

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type") or ""
        try:
            if content_type.startswith("multipart/form-data"):
                body = parse_multipart(content_type, raw)
            else:
                body = json.loads(raw) if raw else {}
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            return self.reply(400, error_body("body is neither JSON nor multipart form data", "invalid_request_error"))
        self.dispatch("POST", body)

    def do_GET(self) -> None:
        self.dispatch("GET", {})

    def dispatch(self, method: str, body: dict) -> None:
        app = self.app
        with app.lock:
            app.in_flight += 1
            app.max_in_flight = max(app.max_in_flight, app.in_flight)
        try:
            status, payload, wait = app.handle(method, self.path, body)
            time.sleep(wait)
            self.reply(status, payload)
        finally:
            with app.lock:
                app.in_flight -= 1

    def reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to answer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean
