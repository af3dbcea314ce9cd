// The softphone's audio thread: the codec and the playout clock of a phone provider.
//
// Microphone -> resample from the context rate (48 kHz in most browsers) to the wire
// rate -> 20 ms frames encoded as the provider sends them (G.711 mu-law or A-law at
// 8 kHz, or 16-bit linear PCM, little- or big-endian) -> posted to the page, which wraps
// them in the provider's JSON dialect.
//
// Bot audio from the page -> decoded at the wire rate -> a jitter buffer played on a
// 20 ms clock, as a provider plays it: each tick takes one 20 ms frame (or silence, an
// underrun when the queue ran dry inside an utterance) -> resampled to the context rate.
// Marks ride in the same queue, behind the audio they follow, and are reported once the
// last sample before them has left the speaker; a clear drops everything queued at once.
//
// Plain JavaScript, no imports: an AudioWorklet module must stand alone.

'use strict';

const FRAME_S = 0.02;
const SILENCE_DBFS = -90;

// ---------------------------------------------------------------- G.711 (ITU-T G.711)

const MULAW_BIAS = 0x84;
const MULAW_SEG_END = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];

function mulawEncode(sample) {
  // sample: int16, taken to 14 bits (the G.711 mu-law input range); the segment of
  // (|x| + 33), then 4 mantissa bits; the code is inverted (bit 7 clear: negative).
  let x = sample >> 2;
  let mask = 0xff;
  if (x < 0) {
    x = -x;
    mask = 0x7f;
  }
  if (x > 8159) x = 8159;
  x += 0x21;
  let seg = 0;
  while (seg < 8 && x > MULAW_SEG_END[seg]) seg++;
  if (seg === 8) return 0x7f ^ mask; // past the last segment: the loudest code
  return ((seg << 4) | ((x >> (seg + 1)) & 0x0f)) ^ mask;
}

function mulawDecode(code) {
  code = ~code & 0xff;
  const sign = code & 0x80;
  const exponent = (code >> 4) & 0x07;
  const mantissa = code & 0x0f;
  const magnitude = (((mantissa << 3) + MULAW_BIAS) << exponent) - MULAW_BIAS;
  return sign ? -magnitude : magnitude;
}

function alawEncode(sample) {
  // A-law: sign bit set for non-negative samples, 13-bit magnitude, even bits inverted.
  let sign = 0x80;
  if (sample < 0) {
    sample = -sample - 1;
    sign = 0x00;
  }
  if (sample > 32767) sample = 32767;
  let code;
  if (sample < 256) {
    code = sample >> 4;
  } else {
    let exponent = 7;
    for (let mask = 0x4000; (sample & mask) === 0 && exponent > 1; mask >>= 1) exponent--;
    code = (exponent << 4) | ((sample >> (exponent + 3)) & 0x0f);
  }
  return (sign | code) ^ 0x55;
}

function alawDecode(code) {
  code ^= 0x55;
  const exponent = (code >> 4) & 0x07;
  const mantissa = code & 0x0f;
  let magnitude = exponent === 0 ? (mantissa << 4) + 8 : ((mantissa << 4) + 0x108) << (exponent - 1);
  return code & 0x80 ? magnitude : -magnitude;
}

const MULAW_TABLE = new Int16Array(256);
const ALAW_TABLE = new Int16Array(256);
for (let i = 0; i < 256; i++) {
  MULAW_TABLE[i] = mulawDecode(i);
  ALAW_TABLE[i] = alawDecode(i);
}

// ---------------------------------------------------------------- resampling

// Band-limited interpolation with a Blackman-windowed sinc, read from a table. The
// cutoff sits below the lower of the two Nyquist rates (times ROLLOFF), so neither the
// microphone's energy above 4 kHz folds into an 8 kHz stream nor the images of 8 kHz
// audio reach the speaker. Works for any pair of rates (44.1 kHz devices too).
const ZEROS = 8;
const TABLE_RES = 512;
const ROLLOFF = 0.92;
const KERNEL = (() => {
  const n = ZEROS * TABLE_RES + 2;
  const table = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = i / TABLE_RES;
    if (u >= ZEROS) break;
    const sinc = u === 0 ? 1 : Math.sin(Math.PI * u) / (Math.PI * u);
    const x = u / ZEROS;
    const window = 0.42 + 0.5 * Math.cos(Math.PI * x) + 0.08 * Math.cos(2 * Math.PI * x);
    table[i] = sinc * window;
  }
  return table;
})();

class Resampler {
  constructor(inRate, outRate) {
    this.step = inRate / outRate; // input samples per output sample
    this.cut = Math.min(1, outRate / inRate) * ROLLOFF;
    this.half = Math.ceil(ZEROS / this.cut); // kernel half-width, input samples
    this.buf = new Float32Array(4096);
    this.len = this.half; // starts with half a kernel of silence (the filter's delay)
    this.pos = this.half; // where the next output sits, in buf's samples
  }

  // Append input samples; returns the output samples that are now complete.
  push(input) {
    if (this.len + input.length > this.buf.length) this._compact(input.length);
    this.buf.set(input, this.len);
    this.len += input.length;
    const out = [];
    const { buf, half, cut, step } = this;
    const scale = cut * TABLE_RES;
    while (this.pos + half < this.len) {
      const t = this.pos;
      const first = Math.ceil(t - half);
      const last = Math.floor(t + half);
      let acc = 0;
      for (let k = first; k <= last; k++) {
        const d = Math.abs(t - k) * scale;
        const i = d | 0;
        if (i >= ZEROS * TABLE_RES) continue;
        const w = KERNEL[i] + (KERNEL[i + 1] - KERNEL[i]) * (d - i);
        acc += buf[k] * w;
      }
      out.push(acc * cut);
      this.pos += step;
    }
    return out;
  }

  _compact(incoming) {
    const drop = Math.max(0, Math.floor(this.pos - this.half) - 1);
    const keep = this.len - drop;
    let buf = this.buf;
    if (keep + incoming > buf.length) buf = new Float32Array(2 * (keep + incoming));
    buf.set(this.buf.subarray(drop, this.len), 0);
    this.buf = buf;
    this.len = keep;
    this.pos -= drop;
  }
}

// ---------------------------------------------------------------- helpers

function levelDbfs(samples) {
  // samples: floats in [-1, 1]
  if (!samples.length) return SILENCE_DBFS;
  let sum = 0;
  for (let i = 0; i < samples.length; i++) sum += samples[i] * samples[i];
  const rms = Math.sqrt(sum / samples.length);
  return rms > 0 ? Math.max(SILENCE_DBFS, 20 * Math.log10(rms)) : SILENCE_DBFS;
}

// The dominant frequency of a frame from its zero crossings (interpolated between
// samples): enough to tell which tone is playing. null for silence or noise.
function dominantHz(samples, rate) {
  let firstAt = -1;
  let lastAt = -1;
  let crossings = 0;
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1];
    const b = samples[i];
    if ((a < 0 && b >= 0) || (a >= 0 && b < 0)) {
      const at = i - 1 + a / (a - b);
      if (firstAt < 0) firstAt = at;
      lastAt = at;
      crossings++;
    }
  }
  if (crossings < 3 || lastAt <= firstAt) return null;
  return ((crossings - 1) / 2) * rate / (lastAt - firstAt);
}

function toInt16(x) {
  const s = Math.round(x * 32768);
  return s > 32767 ? 32767 : s < -32768 ? -32768 : s;
}

// ---------------------------------------------------------------- the processor

class PhoneCodec extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions;
    this.encoding = o.encoding; // 'pcmu' | 'pcma' | 'l16'
    this.rate = o.rate; // wire rate
    this.bigEndian = o.byteOrder === 'big';
    this.frame = Math.round(this.rate * FRAME_S); // samples per 20 ms frame
    this.jitterFrames = Math.max(0, o.jitterFrames | 0); // queued before playing starts
    this.down = new Resampler(sampleRate, this.rate);
    this.up = new Resampler(this.rate, sampleRate);
    this.mic = new Float32Array(this.frame);
    this.micFill = 0;
    this.live = true; // mic frames flow until the page says stop
    // Playout: a queue of wire-rate frames (Float32Array) and marks ({mark: name}).
    this.queue = [];
    this.queuedFrames = 0;
    this.partial = null; // incoming audio not yet a whole frame
    this.playing = false; // inside an utterance (for underruns and jitter fill)
    this.waited = 0; // ticks audio has waited for the jitter target
    this.lastWasAudio = false;
    this.out = new Float32Array(8192); // context-rate samples ready for the speaker
    this.outStart = 0;
    this.outEnd = 0;
    this.played = 0; // context-rate samples that have left the speaker
    this.pendingMarks = []; // [name, played-count at which it is reached]
    this.underruns = 0;
    this.recording = false;
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  onMessage(m) {
    if (m.type === 'media') {
      this.enqueue(this.decode(new Uint8Array(m.data)));
    } else if (m.type === 'mark') {
      if (!this.queuedFrames && !this.partial && this.outEnd === this.outStart) {
        this.port.postMessage({ type: 'marks', names: [m.name] }); // nothing to wait for
      } else {
        this.flushPartial();
        this.queue.push({ mark: m.name });
      }
    } else if (m.type === 'clear') {
      const names = this.pendingMarks.map((p) => p[0]);
      for (const item of this.queue) if (item.mark !== undefined) names.push(item.mark);
      this.queue = [];
      this.queuedFrames = 0;
      this.partial = null;
      this.pendingMarks = [];
      this.outStart = this.outEnd = 0;
      this.playing = false;
      this.port.postMessage({ type: 'cleared', names });
    } else if (m.type === 'record') {
      this.recording = !!m.on;
    } else if (m.type === 'stop') {
      this.live = false;
    }
  }

  decode(bytes) {
    let pcm;
    if (this.encoding === 'l16') {
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      pcm = new Float32Array(bytes.byteLength >> 1);
      for (let i = 0; i < pcm.length; i++) pcm[i] = view.getInt16(2 * i, !this.bigEndian) / 32768;
    } else {
      const table = this.encoding === 'pcma' ? ALAW_TABLE : MULAW_TABLE;
      pcm = new Float32Array(bytes.length);
      for (let i = 0; i < bytes.length; i++) pcm[i] = table[bytes[i]] / 32768;
    }
    return pcm;
  }

  encode(frame) {
    const n = frame.length;
    if (this.encoding === 'l16') {
      const bytes = new Uint8Array(2 * n);
      const view = new DataView(bytes.buffer);
      for (let i = 0; i < n; i++) view.setInt16(2 * i, toInt16(frame[i]), !this.bigEndian);
      return bytes;
    }
    const bytes = new Uint8Array(n);
    const enc = this.encoding === 'pcma' ? alawEncode : mulawEncode;
    for (let i = 0; i < n; i++) bytes[i] = enc(toInt16(frame[i]));
    return bytes;
  }

  // Bot audio arrives in any size (whole 20 ms frames from mediastream); cut it into
  // frames for the 20 ms clock.
  enqueue(pcm) {
    let data = pcm;
    if (this.partial) {
      data = new Float32Array(this.partial.length + pcm.length);
      data.set(this.partial, 0);
      data.set(pcm, this.partial.length);
      this.partial = null;
    }
    let i = 0;
    for (; i + this.frame <= data.length; i += this.frame) {
      this.queue.push(data.slice(i, i + this.frame));
      this.queuedFrames++;
    }
    if (i < data.length) this.partial = data.slice(i);
  }

  flushPartial() {
    if (!this.partial) return;
    const frame = new Float32Array(this.frame);
    frame.set(this.partial, 0);
    this.partial = null;
    this.queue.push(frame);
    this.queuedFrames++;
  }

  // One tick of the provider's 20 ms clock: the next frame, or silence.
  tick() {
    if (!this.playing && this.queuedFrames > 0) {
      // Play once the jitter buffer holds its target, an utterance ended (a mark is
      // queued) or the target was waited for.
      this.waited++;
      if (this.queuedFrames >= this.jitterFrames || this.waited >= this.jitterFrames ||
          this.queue.some((item) => item.mark !== undefined)) {
        this.playing = true;
      }
    }
    const ahead = this.outEnd - this.outStart; // on its way out already
    let frame = null;
    this.reachMarks(ahead); // marks ahead of any queued audio: only the output is left
    if (this.playing) {
      if (!this.queuedFrames && this.partial) this.flushPartial();
      if (this.queuedFrames) {
        frame = this.queue.shift();
        this.queuedFrames--;
        this.lastWasAudio = true;
        this.reachMarks(ahead + Math.round(frame.length * sampleRate / this.rate));
      }
      if (!this.queuedFrames) {
        // Dry: an underrun when the last thing played was audio, not a mark (marks
        // end utterances and the bot's checkpoints).
        if (!frame && this.lastWasAudio) this.underruns++;
        if (!frame) this.playing = false;
      }
      this.waited = 0;
    }
    const wire = frame || new Float32Array(this.frame);
    this.append(this.up.push(wire));
    const report = {
      type: 'tick',
      bot: frame ? levelDbfs(frame) : SILENCE_DBFS,
      hz: frame ? dominantHz(frame, this.rate) : null,
      queuedMs: Math.round((this.queuedFrames + (this.partial ? 1 : 0)) * 20),
      underruns: this.underruns,
    };
    if (this.recording) report.pcm = Int16Array.from(wire, toInt16);
    this.port.postMessage(report);
  }

  // Marks at the head of the queue are reached when ``ahead`` more samples have played.
  reachMarks(ahead) {
    while (this.queue.length && this.queue[0].mark !== undefined) {
      this.pendingMarks.push([this.queue.shift().mark, this.played + ahead]);
      this.lastWasAudio = false;
    }
  }

  append(samples) {
    if (this.outEnd + samples.length > this.out.length) {
      const live = this.outEnd - this.outStart;
      const out = live + samples.length > this.out.length ? new Float32Array(2 * (live + samples.length)) : this.out;
      if (out === this.out) out.copyWithin(0, this.outStart, this.outEnd);
      else out.set(this.out.subarray(this.outStart, this.outEnd), 0);
      this.out = out;
      this.outStart = 0;
      this.outEnd = live;
    }
    for (let i = 0; i < samples.length; i++) this.out[this.outEnd + i] = samples[i];
    this.outEnd += samples.length;
  }

  process(inputs, outputs) {
    // Microphone in (silence when the device gives nothing: a provider never stops).
    const input = inputs[0] && inputs[0][0];
    const block = outputs[0][0].length;
    if (this.live) {
      const wire = this.down.push(input || new Float32Array(block));
      for (let i = 0; i < wire.length; i++) {
        this.mic[this.micFill++] = wire[i];
        if (this.micFill === this.frame) {
          const bytes = this.encode(this.mic);
          const message = { type: 'frame', data: bytes.buffer, mic: levelDbfs(this.mic) };
          if (this.recording) message.pcm = Int16Array.from(this.mic, toInt16);
          this.port.postMessage(message, [bytes.buffer]);
          this.micFill = 0;
        }
      }
    }
    // Speaker out, on the 20 ms clock.
    while (this.outEnd - this.outStart < block) this.tick();
    const out = outputs[0];
    for (let c = 0; c < out.length; c++) out[c].set(this.out.subarray(this.outStart, this.outStart + block));
    this.outStart += block;
    this.played += block;
    if (this.pendingMarks.length) {
      const done = [];
      while (this.pendingMarks.length && this.pendingMarks[0][1] <= this.played) done.push(this.pendingMarks.shift()[0]);
      if (done.length) this.port.postMessage({ type: 'marks', names: done });
    }
    return true;
  }
}

registerProcessor('phone-codec', PhoneCodec);
