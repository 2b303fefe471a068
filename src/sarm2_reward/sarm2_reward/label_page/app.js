// Rollout labelling page. Talks only to this server's JSON API (see label_server.py).
// Times are seconds since the reference camera's first frame, as in the label file.
'use strict';

(function () {
  const KINDS = ['progress_fast', 'progress_slow', 'adjust', 'mistake'];
  const KIND_NAMES = {progress_fast: 'fast', progress_slow: 'slow', adjust: 'adjust',
                      mistake: 'mistake'};
  const PREVIEW_DELAY_MS = 120;
  // Timeline geometry (CSS pixels): segment lane on top, progress plot, reward band.
  const PAD_LEFT = 60, PAD_RIGHT = 12, LANE_TOP = 6, LANE_HEIGHT = 26;
  const PLOT_TOP = 42, PLOT_HEIGHT = 130, REWARD_TOP = 184, REWARD_HEIGHT = 50;
  const DRAG_THRESHOLD_PX = 3;

  const state = {
    rows: [], visible: [], selected: null, current: null, frame: 0, playing: false,
    label: null, baseRevision: null, dirty: false, kind: 'progress_fast',
    preview: null, previewError: '', previewTimer: null, previewSeq: 0,
    drag: null, loading: {},
  };
  const $ = (id) => document.getElementById(id);

  async function api(path, options) {
    const response = await fetch(path, options);
    const payload = await response.json().catch(() => ({error: response.statusText}));
    if (!response.ok) {
      const error = new Error(payload.error || response.statusText);
      error.status = response.status;
      error.field = payload.field || '';
      throw error;
    }
    return payload;
  }
  const q = (name) => 'name=' + encodeURIComponent(name);

  // ---- rollout list ------------------------------------------------------------------------
  async function loadList() {
    const payload = await api('/api/rollouts');
    $('root').textContent = payload.root;
    state.rows = payload.rollouts;
    renderList();
  }

  function outcomeOf(row) {
    if (row.recorded_success === true) return 'success';
    if (row.recorded_success === false) return 'failure';
    return '';
  }

  function renderList() {
    const text = $('filter-text').value.trim().toLowerCase();
    const status = $('filter-status').value;
    const outcome = $('filter-outcome').value;
    state.visible = state.rows.filter((row) => {
      if (status && row.status !== status) return false;
      if (outcome && outcomeOf(row) !== outcome) return false;
      if (!text) return true;
      return [row.name, row.task, row.instruction, row.policy_id, row.episode_id, row.reason]
        .some((value) => (value || '').toLowerCase().includes(text));
    });
    const body = document.querySelector('#rollouts tbody');
    body.replaceChildren();
    for (const row of state.visible) {
      const tr = document.createElement('tr');
      tr.dataset.name = row.name;
      tr.className = 'rollout' + (state.selected === row.name ? ' current' : '');
      if (row.error) {
        tr.classList.add('error-row');
        tr.append(cell(row.name, 'sub'), cell(row.error, 'error'), cell(''),
                  badge('unreadable', 'error'));
      } else {
        const first = document.createElement('td');
        first.append(div(row.task || '(no task)', 'task'), div(row.instruction || '', 'sub'),
                     div(row.name, 'sub'));
        const outcomeText = outcomeOf(row)
          ? outcomeOf(row) + (row.reason ? ' (' + row.reason + ')' : '') : 'unknown';
        tr.append(first, cell(row.policy_id || '–', 'sub'),
                  badge(outcomeText, outcomeOf(row)), badge(row.status, row.status));
        if (row.status_problem) tr.title = row.status_problem;
      }
      tr.addEventListener('click', () => openRollout(row.name));
      body.append(tr);
    }
    $('list-count').textContent = state.visible.length + ' of ' + state.rows.length +
      ' rollouts · ' + state.rows.filter((r) => r.status === 'labelled').length + ' labelled';
  }

  function cell(text, className) {
    const td = document.createElement('td');
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }
  function div(text, className) {
    const element = document.createElement('div');
    element.textContent = text;
    element.className = className;
    return element;
  }
  function badge(text, className) {
    const td = document.createElement('td');
    const span = document.createElement('span');
    span.className = 'badge ' + (className || '');
    span.textContent = text;
    td.append(span);
    return td;
  }

  function stepRollout(delta) {
    if (!state.visible.length) return;
    const names = state.visible.map((row) => row.name);
    const at = names.indexOf(state.selected);
    const next = at < 0 ? (delta > 0 ? 0 : names.length - 1)
      : Math.min(names.length - 1, Math.max(0, at + delta));
    if (names[next] !== state.selected) openRollout(names[next]);
  }

  // ---- one rollout -------------------------------------------------------------------------
  async function openRollout(name) {
    if (state.dirty && !window.confirm('The label of this rollout is not saved. Discard it?')) {
      return;
    }
    pause();
    state.selected = name;
    let detail;
    try {
      detail = await api('/api/rollout?' + q(name));
    } catch (error) {
      if (state.selected !== name) return;
      // An unreadable bag: say why in place of the rollout.
      state.current = null;
      state.dirty = false;
      $('rollout').hidden = true;
      $('empty').hidden = false;
      $('empty').textContent = error.message;
      $('empty').className = 'error';
      renderList();
      return;
    }
    if (state.selected !== name) return;          // another rollout was chosen meanwhile
    state.current = detail;
    state.frame = 0;
    state.preview = null;
    state.previewError = '';
    applySavedLabel(detail);
    $('empty').hidden = true;
    $('rollout').hidden = false;
    $('title').textContent = (detail.task || '(no task)') + ' · ' + detail.episode_id;
    $('instruction').textContent = detail.instruction ? '“' + detail.instruction + '”' : '';
    const outcome = detail.recorded_success === null ? 'no end record'
      : (detail.recorded_success ? 'success' : 'failure') +
        (detail.reason ? ' (' + detail.reason + ')' : '');
    $('facts').textContent = [
      'policy ' + (detail.policy_id || '–'), 'recorded outcome: ' + outcome,
      detail.frames + ' frames, ' + detail.duration.toFixed(2) + ' s',
      detail.rewards ? 'SARM2 ' + (detail.rewards.model_id || '') : 'no SARM2 rewards in bag',
      detail.name].join(' · ');
    const problems = (detail.problems || []).concat(
      detail.problem ? ['label: ' + detail.problem] : []);
    $('problems').hidden = !problems.length;
    $('problems').textContent = problems.join(' · ');
    buildCameras(detail);
    const slider = $('frame-slider');
    slider.max = String(detail.times.length - 1);
    renderList();
    setFrame(0);
    schedulePreview();
  }

  function applySavedLabel(detail) {
    const saved = detail.label;
    const rewards = detail.rewards;
    state.label = saved ? {
      success: saved.success, final_progress: saved.final_progress,
      segments: saved.segments.map((s) => ({start: s.start, end: s.end, kind: s.kind})),
      catastrophic_time: saved.catastrophic_time,
    } : {
      // Unlabelled: start from what the policy node recorded (the person corrects it).
      success: detail.recorded_success === true,
      final_progress: detail.recorded_success === true ? 1
        : (rewards && rewards.progress.length
          ? Math.round(rewards.progress[rewards.progress.length - 1] * 100) / 100 : 0),
      segments: [], catastrophic_time: null,
    };
    state.baseRevision = detail.revision;
    state.dirty = false;
    renderLabel();
    if (saved) {
      setStatus('Saved label (' + detail.status + ')' +
        (saved.labeller.name ? ' by ' + saved.labeller.name : '') + ', ' + saved.labelled_at,
        detail.status === 'labelled' ? 'ok' : 'dirty');
    } else {
      setStatus('Not labelled yet', '');
    }
  }

  function buildCameras(detail) {
    const box = $('cameras');
    box.replaceChildren();
    state.loading = {};
    for (const camera of Object.keys(detail.cameras)) {
      const figure = document.createElement('figure');
      const img = document.createElement('img');
      img.id = 'frame-' + camera;
      img.alt = camera + ' camera';
      img.dataset.camera = camera;
      img.addEventListener('load', () => frameArrived(camera));
      img.addEventListener('error', () => frameArrived(camera));
      const caption = document.createElement('figcaption');
      caption.textContent = camera + (camera === detail.reference_camera ? ' (reference)' : '');
      figure.append(img, caption);
      box.append(figure);
    }
  }

  // Nearest index of t in a sorted array.
  function nearest(times, t) {
    let lo = 0, hi = times.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (times[mid] < t) lo = mid + 1; else hi = mid;
    }
    if (lo > 0 && Math.abs(times[lo - 1] - t) <= Math.abs(times[lo] - t)) return lo - 1;
    return lo;
  }

  function setFrame(index) {
    const detail = state.current;
    if (!detail) return;
    state.frame = Math.max(0, Math.min(detail.times.length - 1, index));
    $('frame-slider').value = String(state.frame);
    const t = detail.times[state.frame];
    $('clock').textContent = 't = ' + t.toFixed(2) + ' / ' + detail.duration.toFixed(2) +
      ' s · frame ' + (state.frame + 1) + ' / ' + detail.times.length;
    for (const camera of Object.keys(detail.cameras)) requestFrame(camera);
    drawTimeline();
  }

  // One request in flight per camera: while playing faster than frames arrive, skip frames.
  function requestFrame(camera) {
    const detail = state.current;
    const img = $('frame-' + camera);
    if (!img) return;
    const index = nearest(detail.cameras[camera].times, detail.times[state.frame]);
    if (img.dataset.index === String(index) || state.loading[camera]) return;
    state.loading[camera] = true;
    img.dataset.index = String(index);
    img.src = '/api/frame?' + q(detail.name) + '&camera=' + encodeURIComponent(camera) +
      '&index=' + index + '&v=' + detail.version;
  }

  function frameArrived(camera) {
    state.loading[camera] = false;
    if (state.current) requestFrame(camera);
  }

  // ---- playback ----------------------------------------------------------------------------
  function play() {
    const detail = state.current;
    if (!detail || state.playing) return;
    if (state.frame >= detail.times.length - 1) setFrame(0);
    state.playing = true;
    $('play').textContent = '❚❚';
    const startTime = detail.times[state.frame];
    const startClock = performance.now();
    const tick = (now) => {
      if (!state.playing || state.current !== detail) return;
      const t = startTime + (now - startClock) / 1000;
      let index = nearest(detail.times, t);
      if (detail.times[index] > t && index > 0) index -= 1;
      if (index !== state.frame) setFrame(index);
      if (index >= detail.times.length - 1) { pause(); return; }
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  }
  function pause() {
    state.playing = false;
    $('play').textContent = '▶';
  }

  // ---- label editing -----------------------------------------------------------------------
  function renderLabel() {
    const label = state.label;
    $('success-yes').checked = label.success === true;
    $('success-no').checked = label.success === false;
    $('final-progress').value = String(label.final_progress);
    $('final-progress-value').textContent = Number(label.final_progress).toFixed(2);
    $('catastrophe-value').textContent = label.catastrophic_time === null ? 'none'
      : 't = ' + label.catastrophic_time.toFixed(2) + ' s';
    $('catastrophe-set').disabled = label.success === true;
    for (const button of document.querySelectorAll('#kinds button')) {
      button.classList.toggle('active', button.dataset.kind === state.kind);
      button.setAttribute('aria-pressed', String(button.dataset.kind === state.kind));
    }
    const body = document.querySelector('#segments tbody');
    body.replaceChildren();
    label.segments.forEach((segment, i) => {
      const tr = document.createElement('tr');
      tr.className = 'segment';
      const kindCell = document.createElement('td');
      const select = document.createElement('select');
      for (const kind of KINDS) {
        const option = document.createElement('option');
        option.value = kind;
        option.textContent = KIND_NAMES[kind];
        select.append(option);
      }
      select.value = segment.kind;
      select.addEventListener('change', () => { segment.kind = select.value; changed(); });
      kindCell.append(select);
      const remove = document.createElement('button');
      remove.type = 'button';
      remove.textContent = '✕';
      remove.title = 'delete this segment';
      remove.addEventListener('click', () => { label.segments.splice(i, 1); changed(); });
      const removeCell = document.createElement('td');
      removeCell.append(remove);
      tr.append(kindCell, cell(segment.start.toFixed(2) + ' – ' + segment.end.toFixed(2) + ' s',
                               'mono'), removeCell);
      body.append(tr);
    });
    $('segments-empty').hidden = label.segments.length > 0;
  }

  function changed() {
    state.dirty = true;
    renderLabel();
    setStatus('Unsaved changes', 'dirty');
    schedulePreview();
    drawTimeline();
  }

  // A new segment takes its span from the segments it overlaps (they are cut or split).
  function addSegment(start, end, kind) {
    const kept = [];
    for (const s of state.label.segments) {
      if (s.end <= start || s.start >= end) { kept.push(s); continue; }
      if (s.start < start) kept.push({start: s.start, end: start, kind: s.kind});
      if (s.end > end) kept.push({start: end, end: s.end, kind: s.kind});
    }
    kept.push({start: start, end: end, kind: kind});
    kept.sort((a, b) => a.start - b.start);
    state.label.segments = kept;
    changed();
  }

  function labelBody() {
    const label = state.label;
    return {
      success: label.success, final_progress: Number(label.final_progress),
      segments: label.segments, catastrophic_time: label.catastrophic_time,
      labeller: $('labeller').value.trim(),
    };
  }

  function schedulePreview() {
    clearTimeout(state.previewTimer);
    state.previewTimer = setTimeout(runPreview, PREVIEW_DELAY_MS);
  }

  // The implied curve comes from the server, which runs the same progress_targets as training.
  async function runPreview() {
    const detail = state.current;
    if (!detail) return;
    const seq = ++state.previewSeq;
    try {
      const result = await api('/api/preview?' + q(detail.name), {
        method: 'POST', headers: {'Content-Type': 'application/json'},
        body: JSON.stringify(labelBody()),
      });
      if (seq !== state.previewSeq || detail !== state.current) return;
      state.preview = result.progress;
      state.previewError = '';
    } catch (error) {
      if (seq !== state.previewSeq) return;
      state.preview = null;
      state.previewError = error.message;
    }
    $('timeline').dataset.previewPoints = state.preview ? String(state.preview.length) : '0';
    drawTimeline();
  }

  async function save() {
    const detail = state.current;
    if (!detail) return;
    const body = labelBody();
    body.base_revision = state.baseRevision;
    setStatus('Saving…', '');
    try {
      const result = await api('/api/label?' + q(detail.name), {
        method: 'PUT', headers: {'Content-Type': 'application/json'},
        body: JSON.stringify(body),
      });
      if (detail !== state.current) return;
      state.baseRevision = result.revision;
      state.dirty = false;
      localStorage.setItem('labeller', body.labeller);
      setStatus('Saved ' + result.label_file + ' (' + result.status + ')', 'ok');
      const row = state.rows.find((r) => r.name === detail.name);
      if (row) {
        row.status = result.status;
        row.status_problem = result.problem;
      }
      renderList();
    } catch (error) {
      setStatus('Not saved: ' + error.message, 'error');
    }
  }

  function setStatus(text, kind) {
    const element = $('save-status');
    element.textContent = text;
    element.className = kind || '';
  }

  // ---- timeline ----------------------------------------------------------------------------
  function geometry(canvas) {
    const width = canvas.clientWidth;
    const duration = state.current.duration || 1;
    return {
      width: width, left: PAD_LEFT, right: width - PAD_RIGHT,
      x: (t) => PAD_LEFT + (t / duration) * (width - PAD_LEFT - PAD_RIGHT),
      t: (x) => Math.max(0, Math.min(duration,
        (x - PAD_LEFT) / (width - PAD_LEFT - PAD_RIGHT) * duration)),
    };
  }

  function drawTimeline() {
    const canvas = $('timeline');
    const detail = state.current;
    if (!detail) return;
    const ratio = window.devicePixelRatio || 1;
    const cssWidth = canvas.clientWidth, cssHeight = canvas.clientHeight;
    if (canvas.width !== Math.round(cssWidth * ratio)) {
      canvas.width = Math.round(cssWidth * ratio);
      canvas.height = Math.round(cssHeight * ratio);
    }
    // Expose the lanes for scripted use (the browser test drags on them).
    Object.assign(canvas.dataset, {laneTop: LANE_TOP, laneHeight: LANE_HEIGHT,
                                   plotLeft: PAD_LEFT, plotRight: cssWidth - PAD_RIGHT});
    const g = geometry(canvas);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, cssWidth, cssHeight);
    const css = getComputedStyle(document.documentElement);
    const color = (name) => css.getPropertyValue('--' + name).trim();
    const kindColor = {progress_fast: color('fast'), progress_slow: color('slow'),
                       adjust: color('adjust'), mistake: color('mistake')};
    ctx.font = '11px system-ui, sans-serif';

    // Segment lane.
    ctx.fillStyle = '#f1f3f6';
    ctx.fillRect(g.left, LANE_TOP, g.right - g.left, LANE_HEIGHT);
    for (const s of state.label.segments) {
      ctx.fillStyle = kindColor[s.kind];
      ctx.fillRect(g.x(s.start), LANE_TOP, g.x(s.end) - g.x(s.start), LANE_HEIGHT);
      ctx.globalAlpha = 0.08;
      ctx.fillRect(g.x(s.start), PLOT_TOP, g.x(s.end) - g.x(s.start), PLOT_HEIGHT);
      ctx.globalAlpha = 1;
      ctx.fillStyle = '#fff';
      if (g.x(s.end) - g.x(s.start) > 40) {
        ctx.fillText(KIND_NAMES[s.kind], g.x(s.start) + 4, LANE_TOP + 17);
      }
    }
    if (state.drag && state.drag.mode === 'segment') {
      const a = Math.min(state.drag.t0, state.drag.t1), b = Math.max(state.drag.t0, state.drag.t1);
      ctx.fillStyle = kindColor[state.kind];
      ctx.globalAlpha = 0.5;
      ctx.fillRect(g.x(a), LANE_TOP, g.x(b) - g.x(a), LANE_HEIGHT);
      ctx.globalAlpha = 1;
    }
    ctx.fillStyle = '#667085';
    ctx.fillText('segments', 2, LANE_TOP + 17);

    // Progress plot frame and axis.
    const py = (v) => PLOT_TOP + (1 - v) * PLOT_HEIGHT;
    ctx.strokeStyle = '#d5d9e0';
    ctx.lineWidth = 1;
    ctx.strokeRect(g.left, PLOT_TOP, g.right - g.left, PLOT_HEIGHT);
    ctx.fillStyle = '#667085';
    for (const v of [0, 0.5, 1]) {
      ctx.fillText(v.toFixed(1), 4, py(v) + 4);
      ctx.beginPath();
      ctx.moveTo(g.left, py(v));
      ctx.lineTo(g.right, py(v));
      ctx.stroke();
    }
    const rewards = detail.rewards;
    if (rewards) line(ctx, rewards.times, rewards.progress, g.x, py, color('live'), []);
    if (state.preview) {
      line(ctx, detail.times, state.preview, g.x, py, color('implied'), [6, 4], 2.5);
    } else if (state.previewError) {
      ctx.fillStyle = '#b42318';
      ctx.fillText('label not valid: ' + state.previewError, g.left + 6, PLOT_TOP + 14);
    }

    // Reward band (own scale, zero line).
    ctx.strokeStyle = '#d5d9e0';
    ctx.strokeRect(g.left, REWARD_TOP, g.right - g.left, REWARD_HEIGHT);
    ctx.fillStyle = '#667085';
    ctx.fillText('reward', 2, REWARD_TOP + REWARD_HEIGHT / 2 + 4);
    if (rewards && rewards.reward.length) {
      const extent = Math.max(1e-6, ...rewards.reward.map(Math.abs));
      const ry = (v) => REWARD_TOP + REWARD_HEIGHT / 2 - (v / extent) * (REWARD_HEIGHT / 2 - 2);
      ctx.beginPath();
      ctx.moveTo(g.left, ry(0));
      ctx.lineTo(g.right, ry(0));
      ctx.stroke();
      line(ctx, rewards.times, rewards.reward, g.x, ry, color('reward'), []);
      ctx.fillText('±' + extent.toPrecision(2), 4, REWARD_TOP + 10);
    }

    // Catastrophic frame and play head.
    const catastrophe = state.label.catastrophic_time;
    if (catastrophe !== null) {
      ctx.strokeStyle = color('catastrophe');
      ctx.lineWidth = 3;
      ctx.beginPath();
      ctx.moveTo(g.x(catastrophe), LANE_TOP);
      ctx.lineTo(g.x(catastrophe), REWARD_TOP + REWARD_HEIGHT);
      ctx.stroke();
    }
    const head = g.x(detail.times[state.frame]);
    ctx.strokeStyle = '#1d2433';
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    ctx.moveTo(head, LANE_TOP);
    ctx.lineTo(head, REWARD_TOP + REWARD_HEIGHT);
    ctx.stroke();
    ctx.fillStyle = '#667085';
    ctx.fillText('0 s', g.left, cssHeight - 3);
    const end = detail.duration.toFixed(1) + ' s';
    ctx.fillText(end, g.right - ctx.measureText(end).width, cssHeight - 3);
  }

  function line(ctx, xs, ys, fx, fy, strokeStyle, dash, width) {
    if (!xs.length) return;
    ctx.strokeStyle = strokeStyle;
    ctx.lineWidth = width || 1.5;
    ctx.setLineDash(dash);
    ctx.beginPath();
    xs.forEach((x, i) => (i ? ctx.lineTo(fx(x), fy(ys[i])) : ctx.moveTo(fx(x), fy(ys[i]))));
    ctx.stroke();
    ctx.setLineDash([]);
  }

  // Times snap to frame times: a label describes what the frames show.
  function snap(t) {
    return state.current.times[nearest(state.current.times, t)];
  }

  function timelineDown(event) {
    if (!state.current || event.button !== 0) return;
    const canvas = $('timeline');
    const rect = canvas.getBoundingClientRect();
    const x = event.clientX - rect.left, y = event.clientY - rect.top;
    const t = geometry(canvas).t(x);
    canvas.setPointerCapture(event.pointerId);
    const inLane = y < LANE_TOP + LANE_HEIGHT + 4;
    state.drag = {mode: inLane ? 'segment' : 'scrub', x0: x, t0: t, t1: t};
    if (!inLane) {
      pause();
      setFrame(nearest(state.current.times, t));
    }
    event.preventDefault();
  }

  function timelineMove(event) {
    if (!state.drag) return;
    const canvas = $('timeline');
    const rect = canvas.getBoundingClientRect();
    const t = geometry(canvas).t(event.clientX - rect.left);
    state.drag.t1 = t;
    if (state.drag.mode === 'scrub') setFrame(nearest(state.current.times, t));
    else drawTimeline();
  }

  function timelineUp(event) {
    const drag = state.drag;
    if (!drag) return;
    state.drag = null;
    const canvas = $('timeline');
    const rect = canvas.getBoundingClientRect();
    const x = event.clientX - rect.left;
    if (drag.mode === 'segment') {
      const a = snap(Math.min(drag.t0, drag.t1)), b = snap(Math.max(drag.t0, drag.t1));
      if (Math.abs(x - drag.x0) >= DRAG_THRESHOLD_PX && b > a) addSegment(a, b, state.kind);
      else drawTimeline();
    }
  }

  // ---- keyboard ----------------------------------------------------------------------------
  function onKey(event) {
    const target = event.target;
    const typing = target.tagName === 'TEXTAREA' || target.tagName === 'SELECT' ||
      (target.tagName === 'INPUT' && target.type !== 'range' && target.type !== 'radio');
    if (typing || event.altKey || event.metaKey) return;
    if (event.ctrlKey && event.key !== 's') return;
    const onRange = target.tagName === 'INPUT' && target.type === 'range';
    const key = event.key;
    let handled = true;
    if (key === 's' || key === 'S') save();
    else if (key === 'j' || key === 'PageDown') stepRollout(1);
    else if (key === 'k' || key === 'PageUp') stepRollout(-1);
    else if (!state.current) handled = false;
    else if ((key === 'ArrowRight' || key === 'ArrowLeft') && !onRange) {
      pause();
      setFrame(state.frame + (key === 'ArrowRight' ? 1 : -1) * (event.shiftKey ? 10 : 1));
    } else if ((key === 'Home' || key === 'End') && !onRange) {
      setFrame(key === 'Home' ? 0 : state.current.times.length - 1);
    } else if (key === ' ') {
      if (state.playing) pause(); else play();
    } else if (key >= '1' && key <= '4') {
      state.kind = KINDS[Number(key) - 1];
      renderLabel();
    } else if (key === 'c') {
      setCatastrophe();
    } else if (key === 'y' || key === 'n') {
      setSuccess(key === 'y');
    } else handled = false;
    if (handled) event.preventDefault();
  }

  function setSuccess(success) {
    state.label.success = success;
    if (success) {
      state.label.catastrophic_time = null;
      state.label.final_progress = 1;
    }
    changed();
  }

  function setCatastrophe() {
    if (state.label.success) {
      setStatus('A successful rollout has no catastrophic frame: choose failure first', 'error');
      return;
    }
    state.label.catastrophic_time = state.current.times[state.frame];
    changed();
  }

  // ---- wiring ------------------------------------------------------------------------------
  function init() {
    $('labeller').value = localStorage.getItem('labeller') || '';
    for (const id of ['filter-text', 'filter-status', 'filter-outcome']) {
      $(id).addEventListener('input', renderList);
    }
    $('frame-slider').addEventListener('input', (event) => {
      pause();
      setFrame(Number(event.target.value));
    });
    $('play').addEventListener('click', () => (state.playing ? pause() : play()));
    $('success-yes').addEventListener('change', () => setSuccess(true));
    $('success-no').addEventListener('change', () => setSuccess(false));
    $('final-progress').addEventListener('input', (event) => {
      state.label.final_progress = Number(event.target.value);
      changed();
    });
    for (const button of document.querySelectorAll('#kinds button')) {
      button.addEventListener('click', () => { state.kind = button.dataset.kind; renderLabel(); });
    }
    $('catastrophe-set').addEventListener('click', setCatastrophe);
    $('catastrophe-clear').addEventListener('click', () => {
      state.label.catastrophic_time = null;
      changed();
    });
    $('save').addEventListener('click', save);
    const canvas = $('timeline');
    canvas.addEventListener('pointerdown', timelineDown);
    canvas.addEventListener('pointermove', timelineMove);
    canvas.addEventListener('pointerup', timelineUp);
    canvas.addEventListener('pointercancel', () => { state.drag = null; drawTimeline(); });
    window.addEventListener('resize', drawTimeline);
    document.addEventListener('keydown', onKey);
    window.addEventListener('beforeunload', (event) => {
      if (state.dirty) event.preventDefault();
    });
    loadList().catch((error) => {
      $('list-count').textContent = 'cannot list rollouts: ' + error.message;
    });
  }

  document.addEventListener('DOMContentLoaded', init);
}());
