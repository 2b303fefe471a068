"""Rollout labelling page: ``label_rollouts DIR`` lets a person label rollouts in a browser.

The data flywheel (DESIGN "Learning from rollouts") fine-tunes SARM2 on rollouts a person has
labelled once. This server shows the rollout bags under DIR (policy node rollouts, demonstration
bags) and writes each label as the sidecar of ``sarm2_common.rollout_labels`` beside its bag,
atomically; bags are only ever read. Standard library HTTP server, one page of static files
(``label_page/``: no build step, nothing loaded from elsewhere, works offline).

Frames are read on demand: opening a rollout indexes its messages (``sarm2_common.bag_index``,
a few bytes per message) and each frame is decoded and encoded (PNG, or JPEG for large images)
when the page asks for it, then cached (``FRAME_CACHE_BYTES``).

JSON API (the page uses it; so can scripts and tests). ``name`` is a bag's path relative to DIR:

- ``GET /api/rollouts``: one row per bag (task, instruction, policy id, recorded outcome, label
  status unlabelled / labelled / stale / invalid; ``error`` for a bag that cannot be read);
- ``GET /api/rollout?name=N``: cameras and frame times, the live SARM2 curves recorded in the bag
  (``/sarm2/stage_reward``), the saved label (``revision`` identifies its file's content);
- ``GET /api/frame?name=N&camera=C&index=I``: one frame as an image;
- ``POST /api/preview?name=N`` with a label body: the per-frame progress the label implies
  (``rollout_labels.progress_targets``), without saving;
- ``PUT /api/label?name=N`` with ``{"success", "final_progress", "segments",
  "catastrophic_time", "labeller", "base_revision"}``: validate and save. A bad label gets HTTP
  400 with ``{"error", "field"}`` and nothing is written; with ``base_revision`` (the revision the
  client loaded, null for none) a label saved meanwhile by someone else gets 409 instead of being
  overwritten. Times are seconds since the first frame of the reference camera.

Safety: binds 127.0.0.1 unless ``--host`` says otherwise, answers only requests addressed to
the host it serves (no DNS rebinding), accepts writes only as ``application/json`` (a form on
another site cannot post one without CORS, which this server never grants) and sends a content
security policy that keeps the page from loading anything from elsewhere.
"""

import argparse
from collections import OrderedDict
from dataclasses import dataclass
import errno
import hashlib
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json
import logging
from pathlib import Path, PurePosixPath
import re
import sys
import threading
from urllib.parse import parse_qs, urlsplit

import numpy as np
from sarm2_common import bag_io
from sarm2_common.bag_dataset import find_bags
from sarm2_common.bag_index import BagIndex, header_stamp_ns, index_bag
from sarm2_common.image_encoding import decode_rgb8, ImageFields
from sarm2_common.rollout_labels import (bag_digest, check_label, label_path, LabelError,
                                         MAX_LABEL_BYTES, now_iso, progress_targets,
                                         RolloutLabel, save_label)
from sarm2_common.topics import camera_of_topic

LOG = logging.getLogger('label_rollouts')
PAGE_DIR = Path(__file__).resolve().parent / 'label_page'
STATIC_TYPES = {'.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
                '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml'}
DEFAULT_PORT = 8765
LOOPBACK = ('127.0.0.1', 'localhost', '::1')
# A request body is one label: no larger than a label file may be.
MAX_BODY_BYTES = MAX_LABEL_BYTES
# Bytes of an oversized body read and dropped before answering, so the client (which sends its
# whole body before reading) gets the 400 instead of a reset connection.
MAX_DRAIN_BYTES = 64 * 1024 * 1024
FRAME_CACHE_BYTES = 64 * 1024 * 1024
# Images with more pixels than this are sent as JPEG (fast, small); smaller ones as PNG, where
# JPEG's 8x8 blocks would show.
JPEG_ABOVE_PIXELS = 256 * 256
JPEG_QUALITY = 90
BODY_FIELDS = ('success', 'final_progress', 'segments', 'catastrophic_time', 'labeller',
               'base_revision')
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class RequestError(Exception):
    """A request that cannot be served; ``status`` is the HTTP code, ``field`` what to fix."""

    def __init__(self, status: int, message: str, field_name: str = ''):
        super().__init__(message)
        self.status = status
        self.field = field_name


@dataclass
class CameraStream:
    """One camera's frames: message positions and header stamps (ns), in stamp order."""

    topic: str
    refs: list
    stamps_ns: np.ndarray


class Rollout:
    """One bag opened for labelling: its episode record, frame index and times."""

    def __init__(self, name: str, bag: Path, fingerprint: tuple):
        self.name = name
        self.bag = bag
        self.fingerprint = fingerprint
        self.version = hashlib.sha256(repr(fingerprint).encode()).hexdigest()[:12]
        self.index: BagIndex = index_bag(bag, keep=_wanted)
        self.cameras: dict[str, CameraStream] = {}
        for topic in self.index.topics_of_type(bag_io.IMAGE_TYPE):
            camera = camera_of_topic(topic.topic)
            if camera is None or not topic.messages:
                continue
            refs = sorted(topic.messages, key=lambda ref: header_stamp_ns(ref.head))
            stamps = np.array([header_stamp_ns(ref.head) for ref in refs], dtype=np.int64)
            self.cameras[camera] = CameraStream(topic.topic, refs, stamps)
        if not self.cameras:
            raise ValueError('no camera images (/camera/<name>/image_raw) in the bag')
        # The first camera by name sets the frames, as in bag_dataset (training reads it so).
        self.reference = sorted(self.cameras)[0]
        self.t0_ns = int(self.cameras[self.reference].stamps_ns[0])
        self.times = (self.cameras[self.reference].stamps_ns - self.t0_ns) / 1e9
        self.duration = float(self.times[-1])
        self._read_metadata()
        self._rewards = None

    def _read_metadata(self) -> None:
        records = []
        for topic in self.index.topics_of_type(bag_io.METADATA_TYPE):
            records += [_deserialize(data, bag_io.METADATA_TYPE)
                        for data in self.index.read_all(topic.messages)]
        start = next((r for r in records if r.kind != bag_io.METADATA_END), None)
        end = next((r for r in reversed(records) if r.kind == bag_io.METADATA_END), None)
        described = end or start
        details = {}
        if described is not None and described.metadata_json:
            try:
                details = json.loads(described.metadata_json)
            except ValueError:
                details = {}
            if not isinstance(details, dict):
                details = {}
        self.episode_id = described.episode_id if described is not None else self.bag.name
        self.task = described.task if described is not None else ''
        self.instruction = described.instruction if described is not None else ''
        self.policy_id = str(details.get('policy_id', ''))
        self.source = str(details.get('source', ''))
        self.recorded_success = bool(end.success) if end is not None else None
        self.reason = end.reason if end is not None else ''

    def rewards(self) -> dict | None:
        """Return the live SARM2 outputs recorded in the bag (None if there are none)."""
        if self._rewards is None:
            rows = []
            for topic in self.index.topics_of_type(bag_io.STAGE_REWARD_TYPE):
                for data in self.index.read_all(topic.messages):
                    message = _deserialize(data, bag_io.STAGE_REWARD_TYPE)
                    rows.append(((bag_io.stamp_to_ns(message.header.stamp) - self.t0_ns) / 1e9,
                                 float(message.progress), float(message.reward),
                                 float(message.success_probability), message.model_id))
            rows.sort(key=lambda row: row[0])
            self._rewards = {
                'topic': ', '.join(t.topic for t in
                                   self.index.topics_of_type(bag_io.STAGE_REWARD_TYPE)),
                'model_id': rows[0][4] if rows else '',
                'times': [_round(row[0]) for row in rows],
                'progress': [_round(row[1]) for row in rows],
                'reward': [_round(row[2]) for row in rows],
                'success_probability': [_round(row[3]) for row in rows],
            } if rows else {}
        return self._rewards or None

    def frame_rgb(self, camera: str, index: int) -> np.ndarray:
        """Decode one frame of ``camera`` as uint8 RGB [H, W, 3]."""
        stream = self.cameras.get(camera)
        if stream is None:
            raise RequestError(HTTPStatus.NOT_FOUND, f'no camera {camera!r} in {self.name}; '
                                                     f'cameras: {sorted(self.cameras)}',
                               'camera')
        if not 0 <= index < len(stream.refs):
            raise RequestError(HTTPStatus.NOT_FOUND, f'frame {index} is outside 0..'
                                                     f'{len(stream.refs) - 1}', 'index')
        message = _deserialize(self.index.read(stream.refs[index]), bag_io.IMAGE_TYPE)
        return decode_rgb8(ImageFields(message.height, message.width, message.encoding,
                                       bool(message.is_bigendian), message.step,
                                       message.data))

    def label_state(self) -> dict:
        """Return the label beside the bag: status, problem, the label, its file's revision."""
        check = check_label(self.bag, self.episode_id)
        return {'status': check.status, 'problem': check.problem,
                'label': check.label.to_json() if check.label is not None else None,
                'revision': label_revision(self.bag)}

    def summary(self) -> dict:
        """Return the row of the rollout list."""
        state = self.label_state()
        label = state['label'] or {}
        return {
            'name': self.name, 'episode_id': self.episode_id, 'task': self.task,
            'instruction': self.instruction, 'policy_id': self.policy_id,
            'source': self.source, 'recorded_success': self.recorded_success,
            'reason': self.reason, 'duration': self.duration,
            'frames': len(self.times), 'cameras': sorted(self.cameras),
            'status': state['status'], 'status_problem': state['problem'],
            'label_success': label.get('success'),
            'label_final_progress': label.get('final_progress'),
            'problems': list(self.index.problems), 'error': '',
        }

    def detail(self) -> dict:
        """Return everything the page needs to show and label this rollout."""
        row = self.summary()
        row.update(
            version=self.version, reference_camera=self.reference,
            # Frame times exactly as labels and training see them: a segment the page snaps to
            # a frame starts exactly at that frame.
            times=self.times.tolist(),
            cameras={name: {'topic': stream.topic,
                            'times': ((stream.stamps_ns - self.t0_ns) / 1e9).tolist()}
                     for name, stream in sorted(self.cameras.items())},
            rewards=self.rewards(), label_file=label_path(self.bag).name,
            **{key: value for key, value in self.label_state().items() if key != 'status'})
        return row


def _wanted(topic: str, msgtype: str) -> bool:
    return msgtype in (bag_io.IMAGE_TYPE, bag_io.STAGE_REWARD_TYPE, bag_io.METADATA_TYPE)


def _deserialize(data: bytes, msgtype: str):
    return bag_io.typestore().deserialize_cdr(data, msgtype)


def _round(value: float) -> float:
    """Round a plotted value to 6 decimals (short JSON; nothing is computed from it)."""
    return round(float(value), 6)


def label_revision(bag: Path) -> str | None:
    """Identify the label file's current content (None when there is no label)."""
    try:
        return hashlib.sha256(label_path(bag).read_bytes()).hexdigest()[:16]
    except FileNotFoundError:
        return None


def encode_frame(image: np.ndarray) -> tuple[bytes, str]:
    """Encode an RGB frame for the browser: (bytes, content type)."""
    import cv2

    bgr = np.ascontiguousarray(image[:, :, ::-1])
    if image.shape[0] * image.shape[1] > JPEG_ABOVE_PIXELS:
        ok, data = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        kind = 'image/jpeg'
    else:
        ok, data = cv2.imencode('.png', bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        kind = 'image/png'
    if not ok:
        raise ValueError(f'cannot encode a {image.shape} frame')
    return data.tobytes(), kind


def check_name(name: str) -> str:
    """Return ``name`` if it is a bag path relative to DIR; RequestError (400) otherwise."""
    if not name:
        raise RequestError(HTTPStatus.BAD_REQUEST, 'name: give the bag path relative to DIR '
                                                   '(?name=...)', 'name')
    path = PurePosixPath(name)
    if (path.is_absolute() or '\\' in name or '\x00' in name or re.match(r'^[A-Za-z]:', name)
            or any(part in ('..', '.') for part in path.parts) or str(path) != name):
        raise RequestError(HTTPStatus.BAD_REQUEST, f'name: {name!r} is not a plain path '
                                                   'relative to DIR (no "..", no leading "/")',
                           'name')
    return name


def _fingerprint(bag: Path) -> tuple:
    """Return what changes when a bag changes: its files' names, sizes and mtimes."""
    entries = []
    for path in sorted(bag.iterdir()) if bag.is_dir() else [bag]:
        if path.suffix in ('.mcap', '.yaml') and path.is_file():
            stat = path.stat()
            entries.append((path.name, stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


class RolloutLibrary:
    """The rollout bags under ``root``: opened (indexed) on first use, reopened when changed."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self._rollouts: dict[str, Rollout] = {}
        self._errors: dict[str, tuple[tuple, str]] = {}
        self._frames: OrderedDict[tuple, tuple[bytes, str]] = OrderedDict()
        self._frame_bytes = 0
        self._lock = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = {}

    def names(self) -> list[str]:
        """Bag paths relative to the root, sorted."""
        return [bag.relative_to(self.root).as_posix() or '.' for bag in find_bags(self.root)]

    def _name_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._name_locks.setdefault(name, threading.Lock())

    def open(self, name: str) -> Rollout:
        """Return the rollout ``name`` (indexing it if new or changed); RequestError if not."""
        check_name(name)
        bag = self.root / name
        if not (bag.is_dir() and bag.resolve().is_relative_to(self.root)
                and bag_io.is_bag_dir(bag)):
            raise RequestError(HTTPStatus.NOT_FOUND, f'name: no bag {name!r} under {self.root}',
                               'name')
        with self._name_lock(name):
            fingerprint = _fingerprint(bag)
            rollout = self._rollouts.get(name)
            if rollout is not None and rollout.fingerprint == fingerprint:
                return rollout
            failed = self._errors.get(name)
            if failed is not None and failed[0] == fingerprint:
                raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, failed[1])
            try:
                rollout = Rollout(name, bag, fingerprint)
            except Exception as error:  # noqa: BLE001 - any unreadable bag becomes an error row
                message = f'{name}: cannot read this bag ({type(error).__name__}: {error})'
                LOG.warning('%s', message)
                self._errors[name] = (fingerprint, message)
                raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, message) from None
            self._rollouts[name] = rollout
            self._errors.pop(name, None)
            return rollout

    def summaries(self) -> list[dict]:
        """Return one row per bag; a bag that cannot be read is a row with ``error`` set."""
        rows = []
        for name in self.names():
            try:
                rows.append(self.open(name).summary())
            except RequestError as error:
                rows.append({'name': name, 'error': str(error), 'status': 'error'})
        return rows

    def frame(self, name: str, camera: str, index: int) -> tuple[bytes, str]:
        """Return one frame as (encoded bytes, content type), cached."""
        rollout = self.open(name)
        key = (name, rollout.version, camera, index)
        with self._lock:
            cached = self._frames.get(key)
            if cached is not None:
                self._frames.move_to_end(key)
                return cached
        try:
            encoded = encode_frame(rollout.frame_rgb(camera, index))
        except RequestError:
            raise
        except Exception as error:  # noqa: BLE001 - a corrupt frame must not stop the server
            raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY,
                               f'{name}: frame {index} of {camera} cannot be decoded '
                               f'({type(error).__name__}: {error})') from None
        with self._lock:
            if key not in self._frames:
                self._frames[key] = encoded
                self._frame_bytes += len(encoded[0])
            while self._frame_bytes > FRAME_CACHE_BYTES and len(self._frames) > 1:
                _, (data, _) = self._frames.popitem(last=False)
                self._frame_bytes -= len(data)
        return encoded

    def preview(self, name: str, body: dict) -> dict:
        """Return the per-frame progress a label body implies; nothing is written."""
        rollout = self.open(name)
        label = label_from_body(rollout, body)
        progress = progress_targets(label, rollout.times)
        return {'times': rollout.times.tolist(), 'progress': [_round(p) for p in progress]}

    def save(self, name: str, body: dict) -> dict:
        """Validate ``body`` and write the label beside the bag (atomically)."""
        rollout = self.open(name)
        label = label_from_body(rollout, body)
        with self._name_lock(name):
            if 'base_revision' in body:
                current = label_revision(rollout.bag)
                if body['base_revision'] != current:
                    raise RequestError(
                        HTTPStatus.CONFLICT, 'this rollout was labelled meanwhile (another tab '
                        'or person saved it); reopen it to see that label, then save again',
                        'base_revision')
            path = save_label(rollout.bag, label)
        LOG.info('saved %s', path)
        state = rollout.label_state()
        state['label_file'] = path.name
        return state


def label_from_body(rollout: Rollout, body) -> RolloutLabel:
    """Build and validate the label of ``rollout`` from a request body (raises LabelError).

    The bag supplies what the person does not choose: episode id, task, duration and digest.
    """
    if not isinstance(body, dict):
        raise LabelError('', 'the body must be a JSON object')
    unknown = sorted(set(body) - set(BODY_FIELDS))
    if unknown:
        raise LabelError(unknown[0], f'unknown field(s) {unknown}; allowed: {list(BODY_FIELDS)}')
    for required in ('success', 'final_progress'):
        if required not in body:
            raise LabelError(required, 'missing')
    labeller = body.get('labeller', '')
    if not isinstance(labeller, str):
        raise LabelError('labeller', 'must be a string (your name)')
    return RolloutLabel.from_json({
        'episode_id': rollout.episode_id, 'task': rollout.task,
        'success': body['success'], 'final_progress': body['final_progress'],
        'duration': rollout.duration, 'segments': body.get('segments') or [],
        'catastrophic_time': body.get('catastrophic_time'),
        'labeller': {'kind': 'person', 'name': labeller}, 'labelled_at': now_iso(),
        'bag_digest': bag_digest(rollout.bag)})


class LabelRequestHandler(BaseHTTPRequestHandler):
    """The page's static files and the JSON API (see the module docstring)."""

    server_version = 'label_rollouts'
    protocol_version = 'HTTP/1.1'

    @property
    def library(self) -> RolloutLibrary:
        return self.server.library

    def log_message(self, format, *args):  # noqa: A002 - the base class names it so
        LOG.debug('%s %s', self.address_string(), format % args)

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._serve(self._get)

    def do_POST(self):  # noqa: N802
        self._serve(self._write)

    def do_PUT(self):  # noqa: N802
        self._serve(self._write)

    def _serve(self, handle) -> None:
        try:
            self._check_host()
            handle(urlsplit(self.path))
        except RequestError as error:
            self._send_json({'error': str(error), 'field': error.field}, error.status)
        except LabelError as error:
            self._send_json({'error': str(error), 'field': error.field}, HTTPStatus.BAD_REQUEST)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as error:  # noqa: BLE001 - one failed request must not stop the server
            LOG.exception('%s %s failed', self.command, self.path)
            self._send_json({'error': f'{type(error).__name__}: {error}', 'field': ''},
                            HTTPStatus.INTERNAL_SERVER_ERROR)

    def _check_host(self) -> None:
        allowed = self.server.allowed_hosts
        if allowed is not None and self.headers.get('Host', '') not in allowed:
            raise RequestError(HTTPStatus.BAD_REQUEST, 'Host header is not this server '
                               f'(expected one of {sorted(allowed)})', 'Host')

    def _get(self, url) -> None:
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        if url.path in ('/', '/index.html'):
            self._send_static('index.html')
        elif url.path.startswith('/static/'):
            self._send_static(url.path[len('/static/'):])
        elif url.path == '/api/rollouts':
            self._send_json({'root': str(self.library.root),
                             'rollouts': self.library.summaries()})
        elif url.path == '/api/rollout':
            self._send_json(self.library.open(query.get('name', '')).detail())
        elif url.path == '/api/label':
            self._send_json(self.library.open(query.get('name', '')).label_state())
        elif url.path == '/api/frame':
            try:
                index = int(query.get('index', ''))
            except ValueError:
                raise RequestError(HTTPStatus.BAD_REQUEST, 'index: must be an integer',
                                   'index') from None
            data, kind = self.library.frame(query.get('name', ''), query.get('camera', ''),
                                            index)
            self._send(data, kind, cache='private, max-age=86400, immutable')
        else:
            raise RequestError(HTTPStatus.NOT_FOUND, f'no such page or API: {url.path}')

    def _write(self, url) -> None:
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        body = self._read_json_body()
        name = query.get('name', '')
        if url.path == '/api/preview' and self.command == 'POST':
            self._send_json(self.library.preview(name, body))
        elif url.path == '/api/label' and self.command in ('PUT', 'POST'):
            self._send_json(self.library.save(name, body))
        else:
            raise RequestError(HTTPStatus.NOT_FOUND,
                               f'no such API: {self.command} {url.path}')

    def _read_json_body(self):
        if self.headers.get('Transfer-Encoding'):
            self.close_connection = True
            raise RequestError(HTTPStatus.BAD_REQUEST, 'send the body with a Content-Length '
                                                       '(no chunked transfer)')
        try:
            length = int(self.headers.get('Content-Length', ''))
        except ValueError:
            self.close_connection = True
            raise RequestError(HTTPStatus.BAD_REQUEST, 'Content-Length is missing') from None
        if length < 0:
            self.close_connection = True
            raise RequestError(HTTPStatus.BAD_REQUEST, 'Content-Length is negative')
        if length > MAX_BODY_BYTES:
            self._drain(length)
            raise RequestError(HTTPStatus.BAD_REQUEST, f'the body is {length} bytes; a label is '
                                                       f'at most {MAX_BODY_BYTES} bytes')
        data = self.rfile.read(length)
        content_type = self.headers.get('Content-Type', '').split(';')[0].strip().lower()
        if content_type != 'application/json':
            raise RequestError(HTTPStatus.BAD_REQUEST, 'Content-Type must be application/json',
                               'Content-Type')
        try:
            return json.loads(data.decode('utf-8'), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError) as error:
            raise RequestError(HTTPStatus.BAD_REQUEST, f'the body is not JSON ({error})') \
                from None

    def _drain(self, length: int) -> None:
        """Read and drop an oversized body (up to MAX_DRAIN_BYTES), then close the connection."""
        self.close_connection = True
        remaining = min(length, MAX_DRAIN_BYTES)
        while remaining > 0:
            block = self.rfile.read(min(remaining, 1 << 16))
            if not block:
                break
            remaining -= len(block)

    def _send_static(self, name: str) -> None:
        path = PAGE_DIR / name
        if (not re.fullmatch(r'[a-z_]+\.[a-z]+', name) or path.suffix not in STATIC_TYPES
                or not path.is_file()):
            raise RequestError(HTTPStatus.NOT_FOUND, f'no such file: {name}')
        self._send(path.read_bytes(), STATIC_TYPES[path.suffix], cache='no-cache')

    def _send_json(self, payload, status=HTTPStatus.OK) -> None:
        data = json.dumps(payload, allow_nan=False).encode('utf-8')
        self._send(data, 'application/json', status=status, cache='no-store')

    def _send(self, data: bytes, content_type: str, status=HTTPStatus.OK,
              cache: str = 'no-store') -> None:
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(data)))
        self.send_header('Cache-Control', cache)
        self.send_header('Content-Security-Policy', CSP)
        self.send_header('X-Content-Type-Options', 'nosniff')
        self.send_header('Referrer-Policy', 'no-referrer')
        if self.close_connection:
            self.send_header('Connection', 'close')
        self.end_headers()
        self.wfile.write(data)


def _reject_constant(name: str):
    raise ValueError(f'{name} is not a number JSON allows')


class LabelServer(ThreadingHTTPServer):
    """ThreadingHTTPServer holding the library; ``url`` is where the page is."""

    daemon_threads = True

    def __init__(self, library: RolloutLibrary, host: str, port: int):
        self.library = library
        family_host = host.strip('[]')
        if ':' in family_host:
            import socket

            self.address_family = socket.AF_INET6
        super().__init__((family_host, port), LabelRequestHandler)
        port = self.server_address[1]
        shown = f'[{family_host}]' if ':' in family_host else family_host
        self.url = f'http://{shown}:{port}/'
        # On loopback, only names of this machine may address the server (DNS rebinding).
        self.allowed_hosts = ({f'{h}:{port}' for h in ('127.0.0.1', 'localhost', '[::1]')}
                              if family_host in LOOPBACK else None)


def make_server(root: str | Path, host: str = '127.0.0.1', port: int = DEFAULT_PORT
                ) -> LabelServer:
    """Create (bind) the labelling server for the bags under ``root``; call serve_forever."""
    return LabelServer(RolloutLibrary(root), host, port)


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='label_rollouts',
        description='Label recorded rollouts in the browser: serves a page for the rosbag2 '
                    'bags under DIR and writes each label as <bag>.label.json beside its bag '
                    '(the bags are never modified).',
        epilog='Keys on the page: j/k next/previous rollout, left/right step a frame (shift: '
               '10), space play/pause, 1-4 segment kind, drag on the timeline to mark a '
               'segment, c catastrophic frame, y/n success, s save. Scripts can use the JSON '
               f'API, e.g. curl http://127.0.0.1:{DEFAULT_PORT}/api/rollouts (see the '
               'sarm2_reward.label_server docstring).')
    parser.add_argument('directory', metavar='DIR', type=Path,
                        help='directory holding rollout bags (searched recursively)')
    parser.add_argument('--port', type=int, default=DEFAULT_PORT,
                        help=f'port to serve on (default {DEFAULT_PORT}; 0 picks a free one)')
    parser.add_argument('--host', default='127.0.0.1',
                        help='address to bind (default 127.0.0.1, this machine only). Another '
                             'address exposes the page, which has no login, to that network')
    parser.add_argument('--verbose', action='store_true', help='log every request')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Console entry point ``label_rollouts``."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(name)s: %(message)s')
    if not args.directory.is_dir():
        print(f'label_rollouts: {args.directory} is not a directory; give the directory that '
              'holds the rollout bags', file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print(f'label_rollouts: --port {args.port} is not a port (0..65535)', file=sys.stderr)
        return 2
    library = RolloutLibrary(args.directory)
    count = len(library.names())
    if count == 0:
        print(f'label_rollouts: no rosbag2 bags under {args.directory} (looked for '
              'metadata.yaml or *.mcap); give the directory the policy node records into '
              '(bag_directory)', file=sys.stderr)
        return 2
    try:
        server = LabelServer(library, args.host, args.port)
    except OSError as error:
        hint = ('is in use; pick another with --port (0: any free port)'
                if error.errno == errno.EADDRINUSE else f'cannot be bound ({error.strerror})')
        print(f'label_rollouts: {args.host}:{args.port} {hint}', file=sys.stderr)
        return 2
    if args.host.strip('[]') not in LOOPBACK:
        LOG.warning('serving on %s: anyone who can reach this address can read the bags and '
                    'write labels', args.host)
    print(f'label_rollouts: {count} bag(s) under {library.root}; open {server.url} '
          '(Ctrl-C stops)', flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
