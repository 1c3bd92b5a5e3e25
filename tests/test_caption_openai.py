"""The `openai` backend and the per-image loop against a real chat-completions server on
loopback. The server answers with the dominant colour of the image it was sent, so a caption
that landed on the wrong image would be caught."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from cli_run import run_cli
from wanlora.captioning import OpenAIBackend, caption_dataset
from wanlora.errors import WanloraError
from wanlora.project_init import init_project

KEY = "sk-test-SECRET-0123456789"
PHRASE = "flat colour swatch in zz artstyle"
MODEL = "vision-test"
COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}


def dominant_colour(data_url: str) -> tuple[str, tuple[int, int]]:
    header, b64 = data_url.split(",", 1)
    image = Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")
    pixel = image.getpixel((image.width // 2, image.height // 2))
    name = min(
        COLOURS, key=lambda n: sum((a - b) ** 2 for a, b in zip(COLOURS[n], pixel, strict=True))
    )
    return name, image.size


class FakeChatServer:
    """Speaks POST /v1/chat/completions. `script` holds canned (status, headers, body) answers
    served first; after that it describes the image's colour, starting with PHRASE, or
    answers HTTP 400 for an image whose colour is in `refused`."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: list[tuple[int, dict, object]] = []
        self.refused: set[str] = set()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body}
                    )
                    canned = server.script.pop(0) if server.script else None
                status, headers, answer = canned or server.answer(self.path, self.headers, body)
                if isinstance(answer, str):
                    answer = {"choices": [{"message": {"role": "assistant", "content": answer}}]}
                data = json.dumps(answer).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def answer(self, path, headers, body):
        if path != "/v1/chat/completions":
            return 404, {}, {"error": {"message": f"no route {path}"}}
        if headers.get("Authorization") != f"Bearer {KEY}":
            given = headers.get("Authorization", "").removeprefix("Bearer ")
            return 401, {}, {"error": {"message": f"Incorrect API key provided: {given}"}}
        if body["model"] != MODEL:
            return 404, {}, {"error": {"message": f"The model `{body['model']}` does not exist"}}
        image_part = body["messages"][0]["content"][1]
        colour, _ = dominant_colour(image_part["image_url"]["url"])
        if colour in self.refused:
            return 400, {}, {"error": {"message": "Invalid image: content filtered"}}
        return 200, {}, f"{PHRASE}, a flat {colour} square. Plain background, even light."

    def sent_images(self):
        return [r["body"]["messages"][0]["content"][1]["image_url"]["url"] for r in self.requests]


@pytest.fixture
def server():
    srv = FakeChatServer()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def project(tmp_path):
    proj = init_project(tmp_path / "proj", "wan22-t2v", "Swatch_v1", "me", trigger=PHRASE)
    data = proj.dataset_dir
    # names say nothing about colours; sorted order differs from colour order
    Image.new("RGB", (64, 48), COLOURS["green"]).save(data / "a.png")
    Image.new("RGB", (2000, 1500), COLOURS["blue"]).save(data / "b.jpg", quality=95)
    Image.new("RGBA", (40, 40), COLOURS["red"] + (255,)).save(data / "c.webp")
    return proj


def backend(server, **kw):
    kw = {"api_key": KEY, "backoff": 0.001, **kw}
    return OpenAIBackend(MODEL, server.url, **kw)


def read(path):
    return path.read_text(encoding="utf-8")


def test_one_request_per_image_and_captions_land_on_their_images(server, project):
    summary = caption_dataset(project, backend(server), style_traits="flat fills, no outlines")
    data = project.dataset_dir
    assert [p.name for p in summary.written] == ["a.txt", "b.txt", "c.txt"]
    assert "green" in read(data / "a.txt")
    assert "blue" in read(data / "b.txt")
    assert "red" in read(data / "c.txt")
    assert all(read(p).startswith(PHRASE + ",") for p in summary.written)
    assert summary.ok and not summary.warnings and not summary.skipped

    assert len(server.requests) == 3
    for request in server.requests:
        assert request["path"] == "/v1/chat/completions"
        assert request["headers"]["Authorization"] == f"Bearer {KEY}"
        text_part = request["body"]["messages"][0]["content"][0]
        assert text_part["type"] == "text"
        assert f'"{PHRASE}"' in text_part["text"] and "flat fills, no outlines" in text_part["text"]
    urls = server.sent_images()
    assert urls[0].startswith("data:image/png;base64,")
    assert urls[1].startswith("data:image/jpeg;base64,")
    assert dominant_colour(urls[1])[1] == (1024, 768)  # downscaled, aspect kept


def test_resume_and_overwrite_keep_every_user_caption(server, project):
    data = project.dataset_dir
    (data / "a.txt").write_text("my own words", encoding="utf-8")
    (data / "a.txt.bak").write_text("an older backup", encoding="utf-8")

    first = caption_dataset(project, backend(server))
    assert [p.name for p in first.skipped] == ["a.png"]
    assert [p.name for p in first.written] == ["b.txt", "c.txt"]
    assert read(data / "a.txt") == "my own words"
    assert len(server.requests) == 2

    again = caption_dataset(project, backend(server))  # resume: nothing left to do
    assert len(again.skipped) == 3 and not again.written
    assert len(server.requests) == 2

    redo = caption_dataset(project, backend(server), overwrite=True)
    assert len(redo.written) == 3 and len(server.requests) == 5
    assert "green" in read(data / "a.txt")
    assert read(data / "a.txt.bak") == "an older backup"  # never clobbered
    assert read(data / "a.txt.bak1") == "my own words"
    assert "blue" in read(data / "b.txt.bak")
    assert sorted(p.name for p in redo.backups) == ["a.txt.bak1", "b.txt.bak", "c.txt.bak"]
    assert not list(data.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_rate_limits_and_server_errors_are_retried_honouring_retry_after(server, project):
    server.script = [
        (429, {"Retry-After": "0.3"}, {"error": {"message": "rate limited"}}),
        (500, {}, {"error": {"message": "boom"}}),
        (503, {}, "temporarily unavailable"),
    ]
    start = time.monotonic()
    summary = caption_dataset(project, backend(server))
    assert time.monotonic() - start >= 0.3
    assert summary.ok and len(summary.written) == 3
    assert len(server.requests) == 6
    assert "green" in read(project.dataset_dir / "a.txt")


def test_persistent_server_errors_stop_after_bounded_tries(server, project):
    server.script = [(500, {}, {"error": {"message": "down"}})] * 10
    with pytest.raises(WanloraError, match="HTTP 500 after 3 tries") as info:
        caption_dataset(project, backend(server, max_retries=2))
    assert "run the same command again" in str(info.value)
    assert len(server.requests) == 3
    assert not list(project.dataset_dir.glob("*.txt"))


def test_bad_key_is_a_clear_error_and_never_shown(server, project):
    wrong = "sk-wrong-key-abcdef123456"
    with pytest.raises(WanloraError) as info:
        caption_dataset(project, OpenAIBackend(MODEL, server.url, api_key=wrong))
    message = str(info.value)
    assert "HTTP 401" in message and "OPENAI_API_KEY" in message
    assert wrong not in message and "abcdef" not in message  # the server echoed it; scrubbed
    assert len(server.requests) == 1  # not retried


def test_wrong_model_or_url_is_a_clear_error(server, project):
    with pytest.raises(WanloraError, match="HTTP 404.*--model .*'nope'"):
        caption_dataset(project, OpenAIBackend("nope", server.url, api_key=KEY))
    with pytest.raises(WanloraError, match="HTTP 404.*--base-url"):
        caption_dataset(project, OpenAIBackend(MODEL, server.url + "/v2", api_key=KEY))


def test_unreachable_server_is_a_clear_error(project):
    with pytest.raises(WanloraError, match="no answer after 3 tries.*--base-url"):
        caption_dataset(
            project, OpenAIBackend(MODEL, "http://127.0.0.1:9/v1", max_retries=2, backoff=0.001)
        )


def test_refusals_are_retried_and_a_missing_phrase_is_put_first(server, project):
    server.script = [
        (200, {}, "I’m sorry, I can't help with that."),
        (200, {}, ""),
        (200, {}, '"A flat green square on white."'),
    ]
    summary = caption_dataset(project, backend(server))
    assert read(project.dataset_dir / "a.txt") == f"{PHRASE}, A flat green square on white."
    assert [(p.name, w) for p, w in summary.warnings] == [
        ("a.png", "the model left out the style phrase; it was put first")
    ]
    assert len(server.requests) == 5


def test_an_image_that_never_gets_a_caption_is_reported_and_the_rest_go_on(server, project):
    server.script = [(200, {}, "I cannot describe this image.")] * 3
    (project.dataset_dir / "d.png").write_bytes(b"not an image")
    summary = caption_dataset(project, backend(server), retries=2)
    failed = {p.name: why for p, why in summary.failed}
    assert "no usable caption after 3 tries" in failed["a.png"]
    assert "d.png: not a readable image" in failed["d.png"]
    assert not (project.dataset_dir / "a.txt").exists()
    assert [p.name for p in summary.written] == ["b.txt", "c.txt"]
    assert len(server.requests) == 5  # 3 for a, 1 each for b and c, none for d


def test_cli_captions_reviews_and_never_leaks_the_key(server, project, tmp_path):
    env = {"OPENAI_API_KEY": KEY}
    r = run_cli("caption", str(project.root), "--base-url", server.url, "--model", MODEL, env=env)
    assert r.returncode == 0, r.stderr
    assert "captioned 3, skipped 0" in r.stdout and "failed 0" in r.stdout
    assert "blue" in read(project.dataset_dir / "b.txt")

    r2 = run_cli("caption", str(project.root), "--base-url", server.url, "--model", MODEL, env=env)
    assert "captioned 0, skipped 3" in r2.stdout and len(server.requests) == 3

    review = run_cli("caption", str(project.root), "--review")
    assert review.returncode == 0
    assert "b.jpg" in review.stdout and "blue" in review.stdout

    bad = run_cli(
        "caption", str(project.root), "--base-url", server.url, "--overwrite",
        env={"OPENAI_API_KEY": "sk-not-the-right-one-999"},
    )  # fmt: skip
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "error:" in bad.stderr and "OPENAI_API_KEY" in bad.stderr

    outputs = r.stdout + r.stderr + r2.stdout + r2.stderr + review.stdout + bad.stdout + bad.stderr
    assert KEY not in outputs and "sk-not-the-right-one" not in outputs
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_an_image_the_server_refuses_is_skipped_and_the_rest_are_captioned(server, project):
    server.refused = {"blue"}  # b.jpg: HTTP 400 for it, every time
    env = {"OPENAI_API_KEY": KEY}
    args = ("caption", str(project.root), "--base-url", server.url, "--model", MODEL)
    r = run_cli(*args, env=env)
    data = project.dataset_dir
    assert r.returncode == 1  # scripts notice; the captions written are kept
    assert "green" in read(data / "a.txt") and "red" in read(data / "c.txt")
    assert not (data / "b.txt").exists()
    assert "captioned 2" in r.stdout and "failed 1" in r.stdout
    assert "b.jpg: skipped, the server refused it: HTTP 400 (Invalid image" in r.stderr
    assert f"not captioned: {data / 'b.jpg'}: the server refused it: HTTP 400" in r.stderr
    assert "1 image(s) not captioned" in r.stderr and "Traceback" not in r.stderr
    assert all(len(line) < 500 for line in r.stderr.splitlines())  # log lines are not padded
    assert len(server.requests) == 3  # a refusal is not retried

    server.refused = set()  # the rerun asks only for the image still without a caption
    r = run_cli(*args, env=env)
    assert r.returncode == 0, r.stderr
    assert "captioned 1, skipped 2" in r.stdout and "blue" in read(data / "b.txt")
    assert len(server.requests) == 4


def test_cli_without_a_style_phrase_says_how_to_set_one(tmp_path):
    proj = init_project(tmp_path / "p", "wan22-t2v", "X_v1", "me")
    Image.new("RGB", (8, 8)).save(proj.dataset_dir / "a.png")
    r = run_cli("caption", str(proj.root), "--base-url", "http://127.0.0.1:9/v1")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "--style-tag" in r.stderr and "trigger" in r.stderr
    shown = run_cli("caption", str(proj.root), "--show-prompt", "--style-tag", "my phrase")
    assert shown.returncode == 0 and 'exactly this phrase: "my phrase"' in shown.stdout
