"""Caption with any OpenAI-compatible chat-completions server that accepts images.

ChatGPT's API, or a local server (vLLM, Ollama, LM Studio, llama.cpp). One request per image.
Rate limits and server errors (429, 5xx) and dropped connections are retried with exponential
backoff, honouring Retry-After; a bad key, a wrong model or URL stop the run with one line.
Any other refusal (400 and the like: an image the server will not take, too large, filtered)
is about the image in that request: it is skipped as an ImageProblem and the run goes on.
The API key is sent only as a Bearer header and is scrubbed from any server message we show.
"""

from __future__ import annotations

import email.utils
import logging
import os
import re
import time
from pathlib import Path

import httpx2  # the httpx API; already installed with huggingface_hub

from ..errors import WanloraError
from .images import DEFAULT_MAX_SIDE, ImageProblem, image_data_url

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o"
KEY_ENV = "OPENAI_API_KEY"


class OpenAIBackend:
    """`caption(image_path, prompt) -> str` through POST {base_url}/chat/completions."""

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_wait: float = 60.0,
        max_side: int = DEFAULT_MAX_SIDE,
    ):
        self.model = model or DEFAULT_MODEL
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self._key = api_key if api_key is not None else os.environ.get(KEY_ENV, "")
        if not self._key and self.base_url == DEFAULT_BASE_URL:
            raise WanloraError(
                f"no API key for {self.base_url}",
                f"set {KEY_ENV} (the key is read from the environment, never from a file), "
                "or pass --base-url for a local server",
            )
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_wait = max_wait
        self.max_side = max_side
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        self._client = httpx2.Client(headers=headers, timeout=timeout)

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        self._client.close()

    def caption(self, image_path: Path, prompt: str) -> str:
        body = {
            "model": self.model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": prompt},
                        {
                            "type": "image_url",
                            "image_url": {"url": image_data_url(image_path, self.max_side)},
                        },
                    ],
                }
            ],
        }
        response = self._post_with_retries(body)
        return self._content(response)

    def _post_with_retries(self, body: dict) -> httpx2.Response:
        for attempt in range(self.max_retries + 1):
            last_try = attempt == self.max_retries
            try:
                response = self._client.post(self.url, json=body)
            except httpx2.TransportError as exc:  # refused, reset, timed out
                if last_try:
                    raise WanloraError(
                        f"{self.url}: no answer after {attempt + 1} tries ({type(exc).__name__})",
                        "check --base-url and that the server is running and reachable",
                    ) from None
                self._wait(attempt, None)
                continue
            if response.status_code == 429 or response.status_code >= 500:
                if last_try:
                    raise WanloraError(
                        f"{self.url}: HTTP {response.status_code} after {attempt + 1} tries: "
                        f"{self._server_message(response)}",
                        "wait and run the same command again; it resumes where it stopped",
                    )
                log.info("HTTP %s from the server, retrying", response.status_code)
                self._wait(attempt, response.headers.get("Retry-After"))
                continue
            self._raise_for_client_error(response)
            return response
        raise AssertionError("unreachable")  # the loop returns or raises

    def _wait(self, attempt: int, retry_after: str | None) -> None:
        delay = _parse_retry_after(retry_after)
        if delay is None:
            delay = self.backoff * (2**attempt)
        time.sleep(min(max(delay, 0.0), self.max_wait))

    def _raise_for_client_error(self, response: httpx2.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        message = self._server_message(response)
        if status in (401, 403):
            raise WanloraError(
                f"{self.url}: HTTP {status}, the API key was refused ({message})",
                f"set {KEY_ENV} to a valid key for this server",
            )
        if status == 404:
            raise WanloraError(
                f"{self.url}: HTTP 404 ({message})",
                f"check --model ({self.model!r}) and --base-url (it usually ends in /v1)",
            )
        raise ImageProblem(
            f"the server refused it: HTTP {status} ({message})",
            f"caption it by hand; if every image is refused, check that model {self.model!r} "
            "accepts images and the server's settings",
        )

    def _server_message(self, response: httpx2.Response) -> str:
        """The server's error text, short, with the key scrubbed out."""
        try:
            error = response.json().get("error")
            text = error.get("message") if isinstance(error, dict) else str(error or "")
        except (ValueError, AttributeError):
            text = response.text
        text = " ".join((text or response.reason_phrase or "no details").split())[:300]
        return self._scrub(text)

    def _scrub(self, text: str) -> str:
        if self._key:
            text = text.replace(self._key, "***")
        return re.sub(r"sk-[A-Za-z0-9_\-*]{4,}", "sk-***", text)

    def _content(self, response: httpx2.Response) -> str:
        try:
            message = response.json()["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise WanloraError(
                f"{self.url}: the answer is not in the chat-completions format",
                "check --base-url: it must point at an OpenAI-compatible API (ending in /v1)",
            ) from None
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):  # some servers answer with content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content if isinstance(content, str) else ""


def _parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (decimals accepted) or an HTTP date; None when absent/garbled."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()
