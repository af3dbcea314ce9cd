// The calls dashboard: polls GET /calls (the one API for the listing) once a second and
// draws the live calls and those that ended in the last minutes. window.dashboard holds
// the last listing, for tests.

'use strict';

(() => {
  const POLL_MS = 1000;
  const $ = (id) => document.getElementById(id);
  window.dashboard = { listing: null, error: null, polls: 0 };

  function headers() {
    const typed = $('token').value.trim();
    if (typed) sessionStorage.setItem('mediastream.token', typed);
    const token = typed || sessionStorage.getItem('mediastream.token') || '';
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  function cell(row, text, cls) {
    const td = document.createElement('td');
    td.textContent = text === null || text === undefined ? '-' : String(text);
    if (cls) td.className = cls;
    row.appendChild(td);
  }

  function fill(table, rows, columns, empty) {
    const body = $(table).tBodies[0];
    body.textContent = '';
    if (!rows.length) {
      const tr = body.insertRow();
      const td = tr.insertCell();
      td.colSpan = columns.length;
      td.className = 'empty';
      td.textContent = empty;
      return;
    }
    for (const r of rows) {
      const tr = body.insertRow();
      tr.dataset.callId = r.call_id;
      tr.title = `${r.call_id} on ${r.instance || '?'}`;
      for (const [get, cls] of columns) cell(tr, get(r), cls);
    }
  }

  const seconds = (s) => (s === null || s === undefined ? '-' : s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`);
  const short = (id) => (id && id.length > 18 ? id.slice(0, 8) + '…' + id.slice(-6) : id);

  const LIVE = [
    [(r) => short(r.call_id)], [(r) => r.provider], [(r) => r.agent], [(r) => r.direction],
    [(r) => seconds(r.duration_s), 'num'], [(r) => r.level_in_dbfs, 'num'], [(r) => r.level_out_dbfs, 'num'],
    [(r) => r.playout_queue_ms, 'num'], [(r) => r.frames_late, 'num'], [(r) => r.frames_filled, 'num'],
    [(r) => r.frames_reordered, 'num'], [(r) => r.underruns, 'num'], [(r) => r.clears, 'num'],
    [(r) => r.processing_p50_us, 'num'], [(r) => r.processing_p99_us, 'num'],
  ];
  const ENDED = [
    [(r) => short(r.call_id)], [(r) => r.provider], [(r) => r.agent], [(r) => seconds(r.duration_s), 'num'],
    [(r) => r.outcome], [(r) => r.close_code, 'num'], [(r) => r.reason],
    [(r) => `${r.frames_in}/${r.frames_out}`, 'num'], [(r) => r.frames_late, 'num'], [(r) => r.frames_filled, 'num'],
    [(r) => r.processing_p99_us, 'num'], [(r) => new Date(r.ended_at * 1000).toLocaleTimeString()],
  ];

  async function poll() {
    try {
      const r = await fetch('/calls', { headers: headers(), cache: 'no-store' });
      if (r.status === 401 || r.status === 403) {
        $('token-row').hidden = false;
        throw new Error(`${r.status}: ${(await r.text()).trim()}`);
      }
      if (!r.ok) throw new Error(`GET /calls: ${r.status}`);
      const listing = await r.json();
      window.dashboard.listing = listing;
      window.dashboard.error = null;
      $('live-count').textContent = `(${listing.calls.length})`;
      fill('live', listing.calls, LIVE, 'no live calls');
      fill('ended', listing.ended, ENDED, 'none');
      $('status').textContent = `${listing.instances.length} instance(s), updated ${new Date(listing.at * 1000).toLocaleTimeString()}`;
    } catch (err) {
      window.dashboard.error = String(err.message || err);
      $('status').textContent = window.dashboard.error;
    } finally {
      window.dashboard.polls++;
      setTimeout(poll, POLL_MS);
    }
  }

  poll();
})();
