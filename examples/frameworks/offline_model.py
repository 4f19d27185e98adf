"""An offline stand-in for the OpenAI API, so that the framework examples run without a network
or an API key: a loopback HTTP server that answers chat-completions and Responses calls.

It plays a fixed script: while the conversation holds fewer tool results than the script has
steps, it asks for the next tool call (if the request offers that tool); then it gives a final
answer. It keeps no state between requests (the conversation it is sent says how far it got),
so one server serves any number of agent runs, concurrently.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL_THAT_RAN = "gpt-4o-mini-2024-07-18"
"""The model every answer says ran (OpenAI answers with the dated snapshot of the model asked for)."""
FINAL_ANSWER = "Order 42 has shipped. I could not wire the refund: that needs a human."

ToolStep = tuple[str, dict[str, Any]]
"""(tool name, arguments) of one scripted tool call."""
SCRIPT: tuple[ToolStep, ...] = (
    ("lookup_order", {"order_id": 42}),
    ("wire_refund", {"order_id": 42, "amount": 120}),
)
"""What the examples' support agent is asked to do: each tool once, in this order, then answer."""


def _offered_tools(body: dict[str, Any]) -> set[str]:
    """Tool names a request offers, in the chat-completions and in the Responses form."""
    names = set()
    for tool in body.get("tools") or ():
        function = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        if isinstance(function.get("name"), str):
            names.add(function["name"])
    return names


def _next_step(script: Sequence[ToolStep], done: int, body: dict[str, Any]) -> ToolStep | None:
    if done < len(script) and script[done][0] in _offered_tools(body):
        return script[done]
    return None


def _usage(chat: bool) -> dict[str, Any]:
    if chat:
        return {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}
    return {
        "input_tokens": 20, "output_tokens": 10, "total_tokens": 30,
        "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0},
    }


def chat_completion(script: Sequence[ToolStep], body: dict[str, Any]) -> dict[str, Any]:
    """The answer to a ``POST /chat/completions`` (non-streaming)."""
    done = sum(1 for message in body.get("messages") or () if message.get("role") == "tool")
    step = _next_step(script, done, body)
    message: dict[str, Any] = {"role": "assistant", "content": FINAL_ANSWER}
    finish = "stop"
    if step is not None:
        call = {"id": f"call_{done}", "type": "function",
                "function": {"name": step[0], "arguments": json.dumps(step[1])}}
        message, finish = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
    return {
        "id": f"chatcmpl-{done}", "object": "chat.completion", "created": int(time.time()),
        "model": MODEL_THAT_RAN,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": _usage(chat=True),
    }


def chat_completion_chunks(answer: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The same answer as a stream of ``chat.completion.chunk``s (``stream: true``)."""
    choice = answer["choices"][0]
    delta: dict[str, Any] = {"role": "assistant"}
    if choice["message"].get("tool_calls"):
        delta["tool_calls"] = [{"index": 0, **call} for call in choice["message"]["tool_calls"]]
    else:
        delta["content"] = choice["message"]["content"]
    base = {key: answer[key] for key in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    yield base | {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    yield base | {"choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]}
    yield base | {"choices": [], "usage": answer["usage"]}


def response(script: Sequence[ToolStep], body: dict[str, Any]) -> dict[str, Any]:
    """The answer to a ``POST /responses`` (non-streaming)."""
    items = body.get("input")
    done = 0
    if isinstance(items, list):
        done = sum(1 for item in items if item.get("type") == "function_call_output")
    step = _next_step(script, done, body)
    if step is not None:
        output = {"type": "function_call", "id": f"fc_{done}", "call_id": f"call_{done}",
                  "name": step[0], "arguments": json.dumps(step[1]), "status": "completed"}
    else:
        output = {"type": "message", "id": f"msg_{done}", "role": "assistant", "status": "completed",
                  "content": [{"type": "output_text", "text": FINAL_ANSWER, "annotations": []}]}
    return {
        "id": f"resp_{done}", "object": "response", "created_at": int(time.time()), "status": "completed",
        "model": MODEL_THAT_RAN, "output": [output], "parallel_tool_calls": True, "tool_choice": "auto",
        "tools": [], "usage": _usage(chat=False),
    }


def _handler(script: Sequence[ToolStep]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if self.path.endswith("/chat/completions"):
                answer = chat_completion(script, body)
                if body.get("stream"):
                    chunks = "".join(f"data: {json.dumps(c)}\n\n" for c in chat_completion_chunks(answer))
                    self._send(200, (chunks + "data: [DONE]\n\n").encode(), "text/event-stream")
                else:
                    self._send(200, json.dumps(answer).encode(), "application/json")
            elif self.path.endswith("/responses"):
                self._send(200, json.dumps(response(script, body)).encode(), "application/json")
            else:
                self._send(404, b'{"error": {"message": "not scripted"}}', "application/json")

        def _send(self, status: int, payload: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def offline_openai(script: Sequence[ToolStep]) -> Iterator[str]:
    """Serve the script on loopback for the duration; yields the base URL (``.../v1``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    thread = threading.Thread(target=server.serve_forever, name="offline-openai", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
