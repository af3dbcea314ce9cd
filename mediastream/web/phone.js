// The softphone: a browser caller that speaks a phone provider's media-stream dialect
// to this server's own media path (/ws/<provider>[/<agent>]), so the bot cannot tell it
// from a phone call. The audio thread (worklet.js) does the codec and the playout
// clock; this file does the dialect, the page and window.phone (the figures, JSON-able,
// for people and tests alike).

'use strict';

(() => {
  const CODECS = {
    twilio: [['pcmu/8000', 'μ-law 8 kHz']],
    telnyx: [['pcmu/8000', 'μ-law 8 kHz'], ['pcma/8000', 'A-law 8 kHz'], ['l16/16000', 'L16 16 kHz']],
    plivo: [['pcmu/8000', 'μ-law 8 kHz'], ['l16/16000', 'L16 16 kHz']],
  };
  const DTMF_KEYS = '123456789*0#';
  const SPEECH_DBFS = -45; // above this the mic (or the bot) counts as sounding
  const CHART_S = 10;

  const $ = (id) => document.getElementById(id);
  const state = {
    state: 'idle', provider: null, agent: null, encoding: null, rate: null,
    callId: null, streamId: null, closeCode: null, closeReason: null, error: null,
    framesSent: 0, mediaReceived: 0, marksReceived: 0, marksEchoed: 0, clears: 0,
    dtmfSent: '', dtmfReceived: '', underruns: 0, queuedMs: 0, micDbfs: -90, botDbfs: -90,
    markMs: null, responseMs: null, echoMs: null,
    heard: { frames: 0, loudFrames: 0, hz: {} },
    recording: false,
  };
  window.phone = state;

  let ws = null;
  let ctx = null;
  let node = null;
  let stream = null;
  let dialect = null;
  let seq = 0;
  let chunk = 0;
  let startedMs = 0;
  const markArrived = new Map(); // name -> performance.now() when the server sent it
  let micSounding = false;
  let micQuietTicks = 0;
  let micLoudTicks = 0;
  let speechEndAt = null;
  let botSounding = false;
  const history = []; // [mic dBFS, bot dBFS, queued ms] per 100 ms
  let recMic = [];
  let recBot = [];

  // ------------------------------------------------------------ the dialects

  function ids(provider) {
    const hex = (n) => Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => b.toString(16).padStart(2, '0')).join('');
    if (provider === 'twilio') return { call: 'CA' + hex(16), stream: 'MZ' + hex(16), account: 'AC' + hex(16) };
    if (provider === 'telnyx') return { call: 'v3:' + hex(18), stream: crypto.randomUUID().toUpperCase(), account: crypto.randomUUID(), session: crypto.randomUUID() };
    return { call: crypto.randomUUID(), stream: crypto.randomUUID(), account: 'MA' + hex(9).toUpperCase() };
  }

  // Each dialect builds the provider's messages (docs/protocols.md §1.2, §2.2, §3.2).
  function makeDialect(provider, id, encoding, rate, params, streamToken) {
    const b64 = (bytes) => {
      let s = '';
      for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
      return btoa(s);
    };
    if (provider === 'twilio') {
      const custom = Object.assign({}, params, streamToken ? { _token: streamToken } : {});
      return {
        opening: () => [
          { event: 'connected', protocol: 'Call', version: '1.0.0' },
          { event: 'start', sequenceNumber: String(++seq), streamSid: id.stream, start: {
            accountSid: id.account, streamSid: id.stream, callSid: id.call, tracks: ['inbound'],
            mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: 8000, channels: 1 },
            customParameters: custom } },
        ],
        media: (bytes, ms) => ({ event: 'media', sequenceNumber: String(++seq), media: {
          track: 'inbound', chunk: String(++chunk), timestamp: String(ms), payload: b64(bytes) }, streamSid: id.stream }),
        dtmf: (digit) => ({ event: 'dtmf', streamSid: id.stream, sequenceNumber: String(++seq), dtmf: { track: 'inbound_track', digit } }),
        mark: (name) => ({ event: 'mark', sequenceNumber: String(++seq), streamSid: id.stream, mark: { name } }),
        cleared: () => null,
        clearEchoesMarks: true,
        stop: () => ({ event: 'stop', sequenceNumber: String(++seq), streamSid: id.stream, stop: { accountSid: id.account, callSid: id.call } }),
      };
    }
    if (provider === 'telnyx') {
      const names = { pcmu: 'PCMU', pcma: 'PCMA', l16: 'L16' };
      return {
        opening: () => [
          { event: 'connected', version: '1.0.0' },
          { event: 'start', sequence_number: String(++seq), stream_id: id.stream, start: {
            user_id: id.account, call_control_id: id.call, call_session_id: id.session,
            from: '+15551230001', to: '+15559870002', custom_parameters: params,
            media_format: { encoding: names[encoding], sample_rate: rate, channels: 1 } } },
        ],
        media: (bytes, ms) => ({ event: 'media', sequence_number: String(++seq), stream_id: id.stream, media: {
          track: 'inbound', chunk: String(++chunk), timestamp: String(ms), payload: b64(bytes) } }),
        dtmf: (digit) => ({ event: 'dtmf', stream_id: id.stream, sequence_number: String(++seq), dtmf: { digit } }),
        mark: (name) => ({ event: 'mark', sequence_number: String(++seq), stream_id: id.stream, mark: { name } }),
        cleared: () => null,
        clearEchoesMarks: true,
        stop: () => ({ event: 'stop', sequence_number: String(++seq), stream_id: id.stream, stop: { user_id: id.account, call_control_id: id.call } }),
      };
    }
    const extra = Object.entries(params).map(([k, v]) => `${k}=${v}`).join(';');
    const epoch = Date.now();
    return {
      opening: () => [
        { event: 'start', sequenceNumber: ++seq, start: {
          callId: id.call, streamId: id.stream, accountId: id.account, tracks: ['inbound'],
          mediaFormat: { encoding: encoding === 'l16' ? 'audio/x-l16' : 'audio/x-mulaw', sampleRate: rate } },
          extra_headers: extra },
      ],
      media: (bytes, ms) => ({ event: 'media', sequenceNumber: ++seq, streamId: id.stream, media: {
        track: 'inbound', chunk: ++chunk, timestamp: String(epoch + ms), payload: b64(bytes) }, extra_headers: extra }),
      dtmf: (digit) => ({ event: 'dtmf', sequenceNumber: ++seq, streamId: id.stream, dtmf: { digit } }),
      mark: (name) => ({ event: 'playedStream', streamId: id.stream, name }),
      cleared: () => ({ sequenceNumber: 0, event: 'clearedAudio', streamId: id.stream }),
      clearEchoesMarks: false,
      stop: () => null, // Plivo defines no stop message: closing the socket ends the stream
    };
  }

  // What the server sends, whatever the dialect: media bytes, a mark, a clear, DTMF.
  function parseServer(provider, text) {
    const m = JSON.parse(text);
    const unb64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
    if (provider === 'plivo') {
      if (m.event === 'playAudio') return { kind: 'media', bytes: unb64(m.media.payload) };
      if (m.event === 'checkpoint') return { kind: 'mark', name: m.name };
      if (m.event === 'clearAudio') return { kind: 'clear' };
      if (m.event === 'sendDTMF') return { kind: 'dtmf', digits: m.dtmf };
      return { kind: 'other', event: m.event };
    }
    if (m.event === 'media') return { kind: 'media', bytes: unb64(m.media.payload) };
    if (m.event === 'mark') return { kind: 'mark', name: m.mark.name };
    if (m.event === 'clear') return { kind: 'clear' };
    return { kind: 'other', event: m.event };
  }

  // ------------------------------------------------------------ the call

  function send(obj) {
    if (obj && ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
  }

  function setState(s, message) {
    state.state = s;
    $('state').textContent = s;
    document.body.dataset.state = s;
    if (message !== undefined) $('message').textContent = message;
    const inCall = s === 'connecting' || s === 'live';
    $('call').disabled = inCall;
    $('hangup').disabled = !inCall;
    $('record').disabled = s !== 'live';
    for (const el of document.querySelectorAll('.setup select, .setup input, .setup textarea')) el.disabled = inCall;
  }

  async function fetchJson(url, options) {
    const r = await fetch(url, options);
    if (!r.ok) throw new Error(`${url}: ${r.status} ${(await r.text()).trim()}`);
    return r.json();
  }

  function authHeaders() {
    const token = $('token').value.trim() || sessionStorage.getItem('mediastream.token') || '';
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  async function call() {
    const provider = $('provider').value;
    const [encoding, rateText] = $('codec').value.split('/');
    const rate = Number(rateText);
    const agent = $('agent').value.trim();
    const params = {};
    for (const line of $('params').value.split('\n')) {
      const at = line.indexOf('=');
      if (at > 0) params[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    if (!('direction' in params)) params.direction = 'inbound';
    Object.assign(state, {
      provider, agent: agent || null, encoding, rate, closeCode: null, closeReason: null, error: null,
      framesSent: 0, mediaReceived: 0, marksReceived: 0, marksEchoed: 0, clears: 0,
      dtmfSent: '', dtmfReceived: '', underruns: 0, markMs: null, responseMs: null, echoMs: null,
      heard: { frames: 0, loudFrames: 0, hz: {} },
    });
    seq = 0;
    chunk = 0;
    markArrived.clear();
    history.length = 0;
    setState('connecting', '');
    try {
      const config = await fetchJson('/phone/config', { headers: authHeaders() });
      const id = ids(provider);
      let streamToken = null;
      if (config.access === 'token') {
        if ($('token').value.trim()) sessionStorage.setItem('mediastream.token', $('token').value.trim());
        const issued = await fetchJson('/phone/token', {
          method: 'POST', headers: Object.assign({ 'Content-Type': 'application/json' }, authHeaders()),
          body: JSON.stringify({ provider, call_id: id.call }),
        });
        streamToken = issued.token;
      }
      state.callId = id.call;
      state.streamId = id.stream;
      $('call-id').textContent = id.call;
      $('format').textContent = `${provider} ${encoding} ${rate / 1000} kHz`;
      dialect = makeDialect(provider, id, encoding, rate, params, streamToken);
      await startAudio(encoding, rate, provider);
      const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
      const path = `/ws/${provider}` + (agent ? `/${encodeURIComponent(agent)}` : '');
      const query = streamToken && provider !== 'twilio' ? `?token=${streamToken}` : '';
      ws = new WebSocket(`${scheme}://${location.host}${path}${query}`);
      ws.onopen = () => {
        for (const m of dialect.opening()) send(m);
        startedMs = performance.now();
        setState('live', 'connected: speak, the bot hears you');
      };
      ws.onmessage = (e) => onServer(provider, e.data);
      ws.onclose = (e) => ended(e.code, e.reason);
      ws.onerror = () => { state.error = 'WebSocket error'; };
    } catch (err) {
      state.error = String(err.message || err);
      await stopAudio();
      setState('idle', state.error);
    }
  }

  async function startAudio(encoding, rate, provider) {
    if (!window.isSecureContext) throw new Error('the microphone needs https (or http://localhost / 127.0.0.1)');
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: false },
    });
    ctx = new AudioContext({ latencyHint: 'interactive' });
    await ctx.audioWorklet.addModule('/phone/worklet.js');
    const jitterMs = Number(new URLSearchParams(location.search).get('jitter') || 20);
    node = new AudioWorkletNode(ctx, 'phone-codec', {
      numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
      processorOptions: {
        encoding, rate, jitterFrames: Math.max(1, Math.round(jitterMs / 20)),
        // Telnyx L16 is network order (RFC 3551); Plivo's is little-endian (protocols.md §5.4).
        byteOrder: provider === 'telnyx' ? 'big' : 'little',
      },
    });
    node.port.onmessage = (e) => onAudio(e.data);
    ctx.createMediaStreamSource(stream).connect(node);
    node.connect(ctx.destination);
    if (ctx.state === 'suspended') await ctx.resume();
  }

  async function stopAudio() {
    if (node) { node.port.postMessage({ type: 'stop' }); node.disconnect(); node = null; }
    if (stream) { for (const t of stream.getTracks()) t.stop(); stream = null; }
    if (ctx) { await ctx.close(); ctx = null; }
  }

  function onServer(provider, text) {
    let m;
    try {
      m = parseServer(provider, text);
    } catch (err) {
      state.error = `unreadable message from the server: ${err}`;
      return;
    }
    if (m.kind === 'media') {
      state.mediaReceived++;
      if (node) node.port.postMessage({ type: 'media', data: m.bytes.buffer }, [m.bytes.buffer]);
    } else if (m.kind === 'mark') {
      state.marksReceived++;
      markArrived.set(m.name, performance.now());
      if (node) node.port.postMessage({ type: 'mark', name: m.name });
    } else if (m.kind === 'clear') {
      state.clears++;
      if (node) node.port.postMessage({ type: 'clear' }); // honoured at once
    } else if (m.kind === 'dtmf') {
      state.dtmfReceived += m.digits;
    }
  }

  function echoMarks(names) {
    for (const name of names) {
      send(dialect.mark(name));
      state.marksEchoed++;
      const at = markArrived.get(name);
      if (at !== undefined) {
        state.markMs = Math.round(performance.now() - at);
        markArrived.delete(name);
      }
    }
  }

  function onAudio(m) {
    if (m.type === 'frame') {
      // One 20 ms frame of the caller's voice, already in the provider's codec.
      if (state.state === 'live') {
        send(dialect.media(new Uint8Array(m.data), Math.round(performance.now() - startedMs)));
        state.framesSent++;
        if (state.recording && m.pcm) recMic.push(m.pcm);
      }
      state.micDbfs = Math.round(m.mic);
      trackSpeech(m.mic);
    } else if (m.type === 'tick') {
      state.botDbfs = Math.round(m.bot);
      state.queuedMs = m.queuedMs;
      state.underruns = m.underruns;
      if (state.state === 'live') {
        if (state.recording && m.pcm) recBot.push(m.pcm);
        state.heard.frames++;
        trackBot(m.bot);
        if (m.bot > SPEECH_DBFS && m.hz) {
          state.heard.loudFrames++;
          const key = String(Math.round(m.hz / 10) * 10);
          state.heard.hz[key] = (state.heard.hz[key] || 0) + 1;
        }
      }
    } else if (m.type === 'marks') {
      echoMarks(m.names);
    } else if (m.type === 'cleared') {
      // Twilio and Telnyx return every pending mark when a clear drops its audio; Plivo
      // acknowledges the clear itself (protocols.md §5.2, §3.2).
      if (dialect.clearEchoesMarks) echoMarks(m.names);
      send(dialect.cleared());
    }
  }

  // Speech end -> bot audio start: the mic sounded for 200 ms, then was quiet for
  // 300 ms; the bot's next sound after that end is its answer. A bot that sounds while
  // the caller speaks (an echo) talks over them: that delay is echoMs instead.
  let voiceFrom = null; // when the mic's current sound began
  function trackSpeech(db) {
    const now = performance.now();
    if (db > SPEECH_DBFS) {
      micLoudTicks++;
      micQuietTicks = 0;
      if (micLoudTicks === 1) {
        voiceFrom = now;
        speechEndAt = null; // the caller went on: no answer is awaited
      }
      if (!micSounding && micLoudTicks >= 10) micSounding = true;
    } else {
      micQuietTicks++;
      micLoudTicks = 0;
      if (micSounding && micQuietTicks >= 15) {
        micSounding = false;
        speechEndAt = now - 300;
      }
    }
  }

  function trackBot(db) {
    const sounding = db > SPEECH_DBFS;
    if (sounding && !botSounding) {
      const now = performance.now();
      if (speechEndAt !== null) {
        state.responseMs = Math.round(now - speechEndAt);
        speechEndAt = null;
      } else if (micLoudTicks > 0 && voiceFrom !== null) {
        state.echoMs = Math.round(now - voiceFrom);
      }
    }
    botSounding = sounding;
  }

  function hangup() {
    if (!ws) return;
    const stop = dialect.stop();
    send(stop);
    setState('ending', 'hanging up');
    // Plivo has no stop message: the caller's close ends the stream. Twilio and Telnyx
    // send stop and the server closes (1000); close ourselves if it does not.
    if (!stop) ws.close(1000, 'caller hung up');
    else setTimeout(() => { if (ws && ws.readyState === WebSocket.OPEN) ws.close(1000, 'caller hung up'); }, 2000);
  }

  async function ended(code, reason) {
    state.closeCode = code;
    state.closeReason = reason || null;
    ws = null;
    if (state.recording) toggleRecord();
    await stopAudio();
    setState('ended', `call ended: ${code}${reason ? ' ' + reason : ''}`);
  }

  function pressKey(digit) {
    if (state.state !== 'live') return;
    send(dialect.dtmf(digit));
    state.dtmfSent += digit;
  }

  // ------------------------------------------------------------ recording (WAV)

  function toggleRecord() {
    state.recording = !state.recording;
    if (node) node.port.postMessage({ type: 'record', on: state.recording });
    $('record').textContent = state.recording ? 'Stop recording' : 'Record';
    if (state.recording) {
      recMic = [];
      recBot = [];
      return;
    }
    const wav = stereoWav(recMic, recBot, state.rate);
    window.phoneRecording = wav; // the last recording, for tests
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([wav], { type: 'audio/wav' }));
    a.download = `call-${state.callId}.wav`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }

  // Left: the caller as sent; right: the bot as played; 16-bit at the wire rate.
  function stereoWav(left, right, rate) {
    const join = (parts) => {
      const all = new Int16Array(parts.reduce((n, p) => n + p.length, 0));
      let at = 0;
      for (const p of parts) { all.set(p, at); at += p.length; }
      return all;
    };
    const l = join(left);
    const r = join(right);
    const n = Math.min(l.length, r.length);
    const buf = new ArrayBuffer(44 + n * 4);
    const v = new DataView(buf);
    const text = (at, s) => { for (let i = 0; i < s.length; i++) v.setUint8(at + i, s.charCodeAt(i)); };
    text(0, 'RIFF'); v.setUint32(4, 36 + n * 4, true); text(8, 'WAVE');
    text(12, 'fmt '); v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 2, true);
    v.setUint32(24, rate, true); v.setUint32(28, rate * 4, true); v.setUint16(32, 4, true); v.setUint16(34, 16, true);
    text(36, 'data'); v.setUint32(40, n * 4, true);
    for (let i = 0; i < n; i++) { v.setInt16(44 + 4 * i, l[i], true); v.setInt16(46 + 4 * i, r[i], true); }
    return buf;
  }

  // ------------------------------------------------------------ the page

  function fillCodecs() {
    const provider = $('provider').value;
    const select = $('codec');
    const want = new URLSearchParams(location.search).get('codec');
    select.textContent = '';
    for (const [value, label] of CODECS[provider]) {
      const o = document.createElement('option');
      o.value = value;
      o.textContent = label;
      if (want && (value === want || value.split('/')[0] === want)) o.selected = true;
      select.appendChild(o);
    }
  }

  function render() {
    const dbText = (db) => (db <= -90 ? 'silent' : `${db} dBFS`);
    $('mic').textContent = dbText(state.micDbfs);
    $('bot').textContent = dbText(state.botDbfs);
    $('mic-meter').value = state.micDbfs;
    $('bot-meter').value = state.botDbfs;
    $('queued').textContent = `${state.queuedMs} ms`;
    $('underruns').textContent = String(state.underruns);
    $('mark-ms').textContent = state.markMs === null ? '-' : `${state.markMs} ms (${state.marksEchoed} echoed)`;
    $('response-ms').textContent = state.responseMs === null ? (state.echoMs === null ? '-' : `talks over you after ${state.echoMs} ms`) : `${state.responseMs} ms`;
    $('frames').textContent = `${state.framesSent} / ${state.mediaReceived}`;
    if (state.state === 'live') {
      history.push([state.micDbfs, state.botDbfs, state.queuedMs]);
      if (history.length > CHART_S * 10) history.shift();
    }
    drawChart();
  }

  function drawChart() {
    const canvas = $('chart');
    const g = canvas.getContext('2d');
    const w = canvas.width;
    const h = canvas.height;
    g.clearRect(0, 0, w, h);
    g.strokeStyle = '#ddd';
    for (const db of [-60, -30]) {
      const y = h * (db / -90);
      g.beginPath(); g.moveTo(0, y); g.lineTo(w, y); g.stroke();
    }
    const x = (i) => w - (history.length - 1 - i) * (w / (CHART_S * 10));
    const line = (k, color, scale) => {
      g.strokeStyle = color;
      g.beginPath();
      history.forEach((p, i) => {
        const y = scale(p[k]);
        if (i === 0) g.moveTo(x(i), y); else g.lineTo(x(i), y);
      });
      g.stroke();
    };
    const dbY = (db) => h * (Math.min(0, Math.max(-90, db)) / -90);
    line(0, '#1f77b4', dbY);
    line(1, '#d62728', dbY);
    line(2, '#2ca02c', (ms) => h - Math.min(h, ms / 4));
    g.font = '11px sans-serif';
    g.fillStyle = '#1f77b4';
    g.fillText('mic', 4, 12); g.fillStyle = '#d62728'; g.fillText('bot', 30, 12);
    g.fillStyle = '#2ca02c'; g.fillText('queued (ms/4)', 56, 12);
  }

  function init() {
    const q = new URLSearchParams(location.search);
    if (q.get('provider') && CODECS[q.get('provider')]) $('provider').value = q.get('provider');
    fillCodecs();
    $('provider').addEventListener('change', fillCodecs);
    if (q.get('agent')) $('agent').value = q.get('agent');
    const params = [];
    for (const [k, v] of q) if (k.startsWith('param.')) params.push(`${k.slice(6)}=${v}`);
    $('params').value = params.join('\n');
    const pad = $('keypad');
    for (const key of DTMF_KEYS) {
      const b = document.createElement('button');
      b.textContent = key;
      b.dataset.key = key;
      b.addEventListener('click', () => pressKey(key));
      pad.appendChild(b);
    }
    $('call').addEventListener('click', call);
    $('hangup').addEventListener('click', hangup);
    $('record').addEventListener('click', toggleRecord);
    setState('idle');
    setInterval(render, 100);
    fetch('/phone/config').then((r) => (r.ok ? r.json() : Promise.reject(r.status))).then((config) => {
      state.access = config.access;
      if (config.access === 'token') $('token-row').hidden = false;
      if (q.get('autocall') === '1') call();
    }).catch((status) => {
      setState('idle', `this server does not offer the softphone (${status})`);
    });
  }

  // For tests and the curious: press keys and hang up from the console.
  window.phoneControl = { call, hangup, pressKey };
  init();
})();
