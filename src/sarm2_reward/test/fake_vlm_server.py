"""A real HTTP server on localhost that speaks the OpenAI chat-completions format.

Used by the LRM tests (in-process and with the reward node in another process) as the VLM
endpoint: real sockets, real JSON, scripted answers and failures.
"""

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json
import threading
import time


class FakeVlmServer:
    """A real HTTP server on localhost speaking the chat-completions format.

    ``behaviour`` picks what it does: ok (answers per question), slow (sleeps ``delay`` s first),
    error (HTTP 500), garbage (prose instead of JSON), not_chat (200 with a non-chat body).
    """

    def __init__(self):
        self.behaviour = 'ok'
        self.delay = 0.0
        self.progress = 0.4
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
                text = body['messages'][0]['content'][-1]['text']
                if outer.behaviour == 'garbage':
                    answer = 'I believe the robot is doing well.'
                elif 'closer to completion' in text:
                    answer = '{"more_complete": "second"}'
                elif 'How much of the task' in text:
                    answer = json.dumps({'progress': outer.progress})
                else:
                    answer = '{"complete": "no"}'
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

    def close(self):
        self.server.shutdown()
        self.server.server_close()
