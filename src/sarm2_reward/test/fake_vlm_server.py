"""A real HTTP server on localhost that speaks the OpenAI chat-completions format.

Used by the LRM tests (in-process and with the reward node in another process) as the VLM
endpoint: real sockets, real JSON, scripted answers in the published LRM adapters' format (with
or without the step-by-step reasoning before the JSON) and scripted failures.
"""

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json
import threading
import time

# The first words of each published prompt (sarm2_reward.lrm.questions) name the question.
PROMPT_STARTS = {'Task: Compare the completion progress.': 'contrastive',
                 'Task: Estimate the completion progress.': 'progress',
                 'Task: Whether the task has been completed.': 'completion'}


def question_of(body: dict) -> str:
    """Which LRM question a chat-completions request asks (from its first text part)."""
    first_text = next(c['text'] for c in body['messages'][0]['content'] if c['type'] == 'text')
    return next(q for start, q in PROMPT_STARTS.items() if first_text.startswith(start))


class FakeVlmServer:
    """A real HTTP server on localhost speaking the chat-completions format.

    ``behaviour`` picks what it does: ok (answers per question), slow (sleeps ``delay`` s first),
    error (HTTP 500), garbage (prose without an answer), not_chat (200 with a non-chat body).
    ``reasoning`` makes answers reason step by step before their JSON, as the contrastive
    adapter is asked to.
    """

    def __init__(self):
        self.behaviour = 'ok'
        self.delay = 0.0
        self.reasoning = False
        self.progress = 0.4
        self.more_complete = 'ImageB'
        self.completed = 'no'
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
                outer.requests.append((self.path, body))
                if outer.behaviour == 'slow':
                    time.sleep(outer.delay)
                if outer.behaviour == 'error':
                    self.send_error(500, 'model crashed')
                    return
                if outer.behaviour == 'not_chat':
                    self._reply(b'<html>gateway</html>')
                    return
                if outer.behaviour == 'garbage':
                    answer = 'I believe the robot is doing well.'
                else:
                    answer = outer.answer(question_of(body))
                self._reply(json.dumps(
                    {'choices': [{'message': {'role': 'assistant', 'content': answer}}]}).encode())

            def _reply(self, payload: bytes):
                self.send_response(200)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        self.url = f'http://127.0.0.1:{self.server.server_address[1]}/v1'
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, question: str) -> str:
        """Return the scripted answer to ``question`` in the adapters' format."""
        if question == 'contrastive':
            json_answer = f'{{ "more_complete_image": "{self.more_complete}" }}'
            # The reasoning names the other image last, so only the JSON gives the answer.
            other = 'ImageA' if self.more_complete == 'ImageB' else 'ImageB'
            reasoning = (f'1. The gripper is above the handle in both images.\n'
                         f'2. The drawer is open wider in {self.more_complete} than in {other}.\n')
        elif question == 'progress':
            json_answer = f'{{ "completion_progress": {self.progress} }}'
            reasoning = 'The drawer is partly open; there is more to do.\n'
        else:
            json_answer = f'{{ "task_completed": "{self.completed}" }}'
            reasoning = 'Looking at the current observation and the task description.\n'
        return reasoning + json_answer if self.reasoning else json_answer

    def questions_asked(self) -> list[str]:
        """Return the question of every request so far, in order."""
        return [question_of(body) for _, body in self.requests]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
