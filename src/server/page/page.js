// The Release Health page: reads the daemon's JSON API, follows verdict
// changes on its event stream (api/v1/releases/stream), and redraws.
// Vanilla JS, no build step, nothing fetched from outside the daemon.
//
// Routes (in the URL's hash):
//   #/                                   releases in flight, DORA per service
//   #/release/SERVICE/ENVIRONMENT/ID     one release
// A read token, when the daemon asks for one: open the page once with
// ?token=TOKEN; it is kept in this tab's sessionStorage, removed from the
// address bar, and sent as "Authorization: Bearer" on every request.
"use strict";

(function () {
  const TOKEN_KEY = "release-verdict.read-token";
  /** The list and the open release are read again this often: the stream
   *  tells only color changes, and reasons and numbers move every tick. */
  const REFRESH_MS = 5000;
  /** DORA moves slowly. */
  const DORA_MS = 30000;
  /** A lost stream is tried again after this long. */
  const RETRY_MS = 1000;

  // --- the token -------------------------------------------------------------

  (function takeToken() {
    const url = new URL(window.location.href);
    if (!url.searchParams.has("token")) return;
    const t = url.searchParams.get("token");
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  })();

  function headers(accept) {
    const h = { Accept: accept };
    const t = sessionStorage.getItem(TOKEN_KEY);
    if (t) h.Authorization = "Bearer " + t;
    return h;
  }

  /** GET a JSON document: {status, body}; status 0 when unreachable. */
  async function getJSON(path) {
    let r;
    try {
      r = await fetch(path, { headers: headers("application/json"), cache: "no-store" });
    } catch (e) {
      return { status: 0, body: null };
    }
    let body = null;
    try {
      body = await r.json();
    } catch (e) {
      body = null;
    }
    if (r.status === 401) setConn("auth");
    return { status: r.status, body: body };
  }

  // --- state -----------------------------------------------------------------

  const state = {
    releases: new Map(), // key -> verdict
    listed: false, // a list has been read at least once
    conn: "connecting", // connecting | live | down | auth
    dora: null, // {status, body}
    detail: null, // {key, service, environment, id, verdict, series, timeline, status}
  };

  const key = (service, environment, id) => service + "\u0000" + environment + "\u0000" + id;
  const keyOf = (v) => key(v.service, v.environment, v.deployment_id);

  function setConn(c) {
    if (state.conn === "auth" && c === "down") return;
    state.conn = c;
    const el = document.getElementById("conn");
    const text = {
      connecting: "connecting…",
      live: "live",
      down: "reconnecting…",
      auth: "read token needed: open with ?token=…",
    }[c];
    el.textContent = text;
    el.className = "conn " + (c === "live" ? "live" : c === "auth" ? "auth" : "down");
    el.title =
      c === "down"
        ? "The daemon cannot be reached; the page keeps trying and shows the last data it had."
        : "";
    if (c === "down" && !state.downSince) state.downSince = Date.now();
    if (c === "live") state.downSince = null;
    const stale = document.getElementById("stale");
    const showStale = c === "down" && state.listed;
    document.body.classList.toggle("stale", showStale);
    stale.hidden = !showStale;
    if (showStale) {
      stale.textContent =
        "The daemon has not answered since " + clock(state.downSince) + ": showing the last verdicts it gave. Trying again every second.";
    }
  }

  function setReleases(list) {
    state.releases = new Map(list.map((v) => [keyOf(v), v]));
    state.listed = true;
  }

  // --- the stream ------------------------------------------------------------

  /** Reads server-sent events with fetch (so the token goes in a header,
   *  which EventSource cannot send); reconnects whenever the stream ends. */
  async function follow() {
    try {
      const r = await fetch("api/v1/releases/stream", {
        headers: headers("text/event-stream"),
        cache: "no-store",
      });
      if (r.status === 401) setConn("auth");
      if (!r.ok || !r.body) throw new Error("HTTP " + r.status);
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true }).replace(/\r/g, "");
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          dispatch(buf.slice(0, end));
          buf = buf.slice(end + 2);
        }
      }
    } catch (e) {
      // Unreachable or cut off: below.
    }
    setConn("down");
    render();
    setTimeout(follow, RETRY_MS);
  }

  function dispatch(block) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    if (data.length === 0) return;
    let body;
    try {
      body = JSON.parse(data.join("\n"));
    } catch (e) {
      return;
    }
    if (event === "snapshot") {
      // The stream holds this replica's releases; the listing holds the
      // whole fleet's (other replicas sharing its ledger): keep both until
      // the listing is read again.
      for (const v of body.releases || []) state.releases.set(keyOf(v), v);
      state.listed = true;
      setConn("live");
      render();
      refreshList();
      refreshDetail();
    } else if (event === "verdict") {
      state.releases.set(keyOf(body), body);
      render();
      if (state.detail && state.detail.key === keyOf(body)) refreshDetail();
    }
  }

  // --- polling ---------------------------------------------------------------

  async function refreshList() {
    const r = await getJSON("api/v1/releases");
    if (r.status === 200 && r.body) {
      setReleases(r.body.releases || []);
      render();
    }
  }

  async function refreshDora() {
    const r = await getJSON("api/v1/dora");
    if (r.status !== 0) state.dora = r;
    render();
  }

  function releasePath(d, tail) {
    const q = "?service=" + encodeURIComponent(d.service) + "&environment=" + encodeURIComponent(d.environment);
    return "api/v1/releases/" + encodeURIComponent(d.id) + (tail || "") + q;
  }

  async function refreshDetail() {
    const d = state.detail;
    if (!d) return;
    const [v, series, timeline] = await Promise.all([
      getJSON(releasePath(d)),
      getJSON(releasePath(d, "/series")),
      getJSON(releasePath(d, "/timeline")),
    ]);
    if (state.detail !== d) return; // moved on meanwhile
    if (v.status === 0) return; // unreachable: keep what we had
    d.status = v.status;
    d.verdict = v.status === 200 ? v.body : d.verdict;
    d.error = v.status === 200 ? null : (v.body && v.body.error) || "HTTP " + v.status;
    d.series = series.status === 200 ? series.body.points : series.status === 0 ? d.series : [];
    d.timeline = timeline;
    render();
  }

  // --- formatting ------------------------------------------------------------

  const esc = (s) =>
    String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

  const WORDS = { green: "GREEN", yellow: "YELLOW", red: "RED" };

  const ICON_PATHS = {
    // a circle with a tick, a triangle with "!", an octagon with a cross:
    // the shape tells the verdict without its color.
    green: '<circle cx="12" cy="12" r="11" fill="currentColor"/><path d="M6.5 12.5l3.6 3.6L17.6 8.4" fill="none" stroke="var(--v)" stroke-width="2.8" stroke-linecap="round" stroke-linejoin="round"/>',
    yellow: '<path d="M12 1.5L23 21.5H1z" fill="currentColor" stroke="currentColor" stroke-width="1.5" stroke-linejoin="round"/><path d="M12 8.5v6.2" stroke="var(--v)" stroke-width="2.8" stroke-linecap="round"/><circle cx="12" cy="18" r="1.6" fill="var(--v)"/>',
    red: '<path d="M7.4 1h9.2L23 7.4v9.2L16.6 23H7.4L1 16.6V7.4z" fill="currentColor"/><path d="M8 8l8 8M16 8l-8 8" stroke="var(--v)" stroke-width="2.8" stroke-linecap="round"/>',
    none: '<circle cx="12" cy="12" r="10" fill="none" stroke="currentColor" stroke-width="2"/><path d="M7.5 12h9" stroke="currentColor" stroke-width="2.5" stroke-linecap="round"/>',
  };
  const icon = (color) => '<svg class="icon" viewBox="0 0 24 24" aria-hidden="true">' + (ICON_PATHS[color] || ICON_PATHS.none) + "</svg>";

  function verdictWord(color) {
    return icon(color) + '<span class="word">' + esc(WORDS[color] || String(color).toUpperCase()) + "</span>";
  }

  const RESULTS = {
    pass: ["green", "PASS"],
    marginal: ["yellow", "MARGINAL"],
    fail: ["red", "FAIL"],
    nodata: ["none", "NO DATA"],
  };
  function resultChip(result) {
    const [color, word] = RESULTS[result] || ["none", String(result).toUpperCase()];
    const cls = color === "none" ? "chip none" : "chip v-" + color;
    return '<span class="' + cls + '">' + icon(color) + esc(word) + "</span>";
  }

  /** A git sha shortened to 10 hex digits; anything else is shown whole. */
  const sha = (s) => (!s ? "" : /^[0-9a-f]{11,}$/i.test(s) ? String(s).slice(0, 10) : String(s));

  function ago(ts) {
    const t = typeof ts === "number" ? ts : Date.parse(ts);
    if (!isFinite(t)) return "";
    const s = Math.max(0, (Date.now() - t) / 1000);
    if (s < 10) return "just now";
    if (s < 60) return Math.floor(s) + " s ago";
    const m = Math.floor(s / 60);
    if (m < 60) return m + " min ago";
    const h = Math.floor(m / 60);
    if (h < 48) return h + " h " + (m % 60) + " min ago";
    return Math.floor(h / 24) + " days ago";
  }
  const since = (ts, prefix) =>
    '<span class="age" data-since="' + esc(ts) + '" data-prefix="' + esc(prefix || "") + '">' + esc((prefix || "") + ago(ts)) + "</span>";

  function clock(ts) {
    const d = new Date(ts);
    return isFinite(d) ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false }) : "";
  }
  function dateTime(ts) {
    const d = new Date(ts);
    if (!isFinite(d)) return "";
    const today = new Date().toDateString() === d.toDateString();
    return today ? clock(d) : d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + clock(d);
  }

  const int = (n) => (n == null ? "—" : Number(n).toLocaleString("en-US"));
  function pct(x) {
    if (x == null) return "—";
    const p = x * 100;
    return (p === 0 ? "0" : p < 0.1 ? p.toFixed(3) : p < 10 ? p.toFixed(2) : p.toFixed(1)) + "%";
  }
  function ms(x) {
    if (x == null) return "—";
    return (x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : Math.round(x).toLocaleString("en-US")) + " ms";
  }
  function duration(sec) {
    if (sec == null) return "—";
    if (sec < 90) return Math.round(sec) + " s";
    if (sec < 5400) return Math.round(sec / 60) + " min";
    if (sec < 172800) return (sec / 3600).toFixed(1) + " h";
    return (sec / 86400).toFixed(1) + " days";
  }
  function num(x) {
    if (x == null) return "—";
    const a = Math.abs(x);
    return a !== 0 && (a < 0.001 || a >= 1e6) ? x.toExponential(2) : String(Number(x.toPrecision(3)));
  }
  const pValue = (p) => (p == null ? "—" : p < 0.0001 ? "p < 0.0001" : "p " + num(p));
  const routeTo = (v) =>
    "#/release/" + [v.service, v.environment, v.deployment_id].map(encodeURIComponent).join("/");

  // --- the overview ----------------------------------------------------------

  function partition() {
    const all = Array.from(state.releases.values());
    const baselines = new Set(
      all.filter((v) => v.baseline).map((v) => key(v.service, v.environment, v.baseline.deployment_id))
    );
    const newest = (a, b) => Date.parse(b.first_seen_at) - Date.parse(a.first_seen_at);
    return {
      inFlight: all.filter((v) => !baselines.has(keyOf(v))).sort(newest),
      serving: all
        .filter((v) => baselines.has(keyOf(v)))
        .sort((a, b) => (a.service + a.environment).localeCompare(b.service + b.environment)),
    };
  }

  function tile(v) {
    const env = v.environment ? '<span class="env">' + esc(v.environment) + "</span>" : "";
    const shaPart = v.git_sha && v.git_sha !== v.deployment_id ? ' · sha <span class="mono" title="' + esc(v.git_sha) + '">' + esc(sha(v.git_sha)) + "</span>" : "";
    const errors = v.canary && v.canary.requests > 0 ? " · " + pct(v.canary.errors / v.canary.requests) + " errors" : "";
    const against = v.baseline
      ? " · vs " + esc(v.baseline.deployment_id)
      : ' · <span title="judged on guardrails alone">no baseline</span>';
    return (
      '<a class="tile v-' + esc(v.verdict) + '" href="' + esc(routeTo(v)) + '" data-deployment-id="' + esc(v.deployment_id) +
      '" data-service="' + esc(v.service) + '" data-verdict="' + esc(v.verdict) + '">' +
      '<div class="band">' + verdictWord(v.verdict) + "</div>" +
      '<div class="body">' +
      '<div class="service">' + esc(v.service) + env + "</div>" +
      '<div class="ids"><span class="mono">' + esc(v.deployment_id) + "</span>" + shaPart + " · " + since(v.first_seen_at, "started ") + "</div>" +
      '<div class="reason">' + esc(v.reason) + "</div>" +
      '<div class="numbers">canary ' + int(v.canary && v.canary.requests) + " requests" + errors + against + "</div>" +
      "</div></a>"
    );
  }

  function servingTable(serving) {
    if (serving.length === 0) return "";
    const rows = serving
      .map(
        (v) =>
          "<tr><td>" + esc(v.service) + "</td><td>" + esc(v.environment) + '</td><td class="mono">' + esc(v.deployment_id) +
          '</td><td class="mono">' + esc(sha(v.git_sha)) + '</td><td class="num">' + int(v.canary.requests) +
          '</td><td class="num">' + (v.canary.requests ? pct(v.canary.errors / v.canary.requests) : "—") + "</td><td>" + since(v.first_seen_at) + "</td></tr>"
      )
      .join("");
    return (
      '<h2>Baselines <span class="note">— the deployments the releases above are compared with</span></h2>' +
      '<div class="table-wrap"><table class="baselines"><thead><tr><th>Service</th><th>Environment</th><th>Deployment</th><th>Sha</th>' +
      '<th class="num">Requests</th><th class="num">Errors</th><th>Serving since</th></tr></thead><tbody>' + rows + "</tbody></table></div>"
    );
  }

  function doraPanel() {
    const d = state.dora;
    let inner;
    if (!d) {
      inner = '<p class="notice">Loading…</p>';
    } else if (d.status === 404 || d.status === 503) {
      inner = '<p class="notice" id="dora-off">Ledger off: DORA measures need the release ledger (<code>[ledger] path</code>).</p>';
    } else if (d.status !== 200 || !d.body) {
      inner = '<p class="notice error">DORA could not be read: ' + esc((d.body && d.body.error) || "HTTP " + d.status) + "</p>";
    } else if (!d.body.dora || d.body.dora.length === 0) {
      inner = '<p class="notice" id="dora-empty">No releases recorded in the window yet.</p>';
    } else {
      const days = Math.max(1, Math.round((Date.parse(d.body.until) - Date.parse(d.body.since)) / 86400000));
      const rows = d.body.dora
        .map((r) => {
          const cfr = r.change_failure_rate == null ? "—" : pct(r.change_failure_rate);
          const ttr = r.time_to_restore_seconds || {};
          const lead = r.lead_time_seconds || {};
          return (
            '<tr data-service="' + esc(r.service) + '"><td>' + esc(r.service) + "</td><td>" + esc(r.environment) + "</td>" +
            '<td class="num">' + num(r.deployments_per_day) + ' / day<span class="sub">' + int(r.deployments) + " promoted</span></td>" +
            '<td class="num">' + duration(lead.median) + '<span class="sub">' + int(lead.count) + " with a known change</span></td>" +
            '<td class="num">' + cfr + '<span class="sub">' + int(r.failed_releases) + " of " + int(r.releases_started) + " releases</span></td>" +
            '<td class="num">' + duration(ttr.median) + '<span class="sub">' + int(ttr.count) + " restored, " + int(ttr.open) + " open</span></td></tr>"
          );
        })
        .join("");
      inner =
        '<div class="table-wrap"><table id="dora-table"><thead><tr><th>Service</th><th>Environment</th>' +
        '<th class="num">Deployment frequency</th><th class="num">Lead time p50</th><th class="num">Change failure rate</th>' +
        '<th class="num">Time to restore p50</th></tr></thead><tbody>' + rows + "</tbody></table></div>";
      return '<section id="dora"><h2>DORA <span class="note">— last ' + days + " days, from the release ledger</span></h2>" + inner + "</section>";
    }
    return '<section id="dora"><h2>DORA</h2>' + inner + "</section>";
  }

  function renderOverview() {
    const { inFlight, serving } = partition();
    let tiles;
    if (!state.listed) {
      tiles = '<p class="notice">' + (state.conn === "auth" ? "A read token is needed: open this page with <code>?token=…</code>." : "Waiting for the daemon…") + "</p>";
    } else if (inFlight.length === 0) {
      tiles =
        '<p class="notice">No releases in flight. Telemetry tagged with <code>deployment.id</code> (and <code>git.sha</code>) shows up here within a second.</p>';
    } else {
      tiles = '<div class="tiles" id="releases">' + inFlight.map(tile).join("") + "</div>";
    }
    return "<h2>Releases in flight</h2>" + tiles + servingTable(serving) + doraPanel();
  }

  function renderSummary() {
    const { inFlight } = partition();
    const n = { red: 0, yellow: 0, green: 0 };
    inFlight.forEach((v) => (n[v.verdict] = (n[v.verdict] || 0) + 1));
    const parts = ["red", "yellow", "green"].filter((c) => n[c] > 0).map((c) => "<b>" + n[c] + "</b> " + WORDS[c].toLowerCase());
    document.getElementById("summary").innerHTML = state.listed ? (parts.join(" · ") || "nothing in flight") : "";
    document.title = (n.red > 0 ? "(" + n.red + " RED) " : "") + "Release Health";
  }

  // --- one release -----------------------------------------------------------

  function banner(v, d) {
    const env = v.environment ? " · " + esc(v.environment) : "";
    const b = v.baseline;
    const meta = [
      "deployment <b class=\"mono\">" + esc(v.deployment_id) + "</b>",
      v.git_sha && v.git_sha !== v.deployment_id ? 'sha <b class="mono" title="' + esc(v.git_sha) + '">' + esc(sha(v.git_sha)) + "</b>" : "",
      b
        ? "baseline <b class=\"mono\">" + esc(b.deployment_id) + "</b>" + (b.git_sha && b.git_sha !== b.deployment_id ? ' <span class="mono">' + esc(sha(b.git_sha)) + "</span>" : "") + (b.chosen_by ? ' <span class="muted">(' + esc(b.chosen_by.replace("_", " ")) + ")</span>" : "")
        : "no baseline: judged on guardrails alone",
      "started <b>" + since(v.first_seen_at) + "</b>",
      v.red_since ? "red since <b>" + since(v.red_since) + "</b>" : "verdict since <b>" + since(v.changed_at) + "</b>",
      "canary <b>" + int(v.canary.requests) + "</b> requests, <b>" + int(v.canary.errors) + "</b> errors",
    ].filter(Boolean);
    const gone = v.live === false ? '<p class="notice">No longer tracked: this is the ledger\'s last verdict for it.</p>' : "";
    return (
      '<section class="banner v-' + esc(v.verdict) + '" id="banner" data-verdict="' + esc(v.verdict) + '">' +
      '<div class="band"><span class="word">' + verdictWord(v.verdict) + '</span><span class="title">' + esc(v.service) + env + "</span></div>" +
      '<div class="reason" id="reason">' + esc(v.reason) + "</div>" +
      '<div class="meta">' + meta.map((m) => "<span>" + m + "</span>").join("") + "</div></section>" + gone
    );
  }

  /** An SVG line chart of canary (solid) against baseline (dashed). */
  function chart(title, points, pick, fmt, axis) {
    // Drawn near the size it is shown at, so its labels stay legible.
    const W = 480, H = 230, L = 74, R = 12, T = 12, B = 30;
    const values = points.map((p) => pick(p));
    const all = [];
    values.forEach(([c, b]) => {
      if (c != null) all.push(c);
      if (b != null) all.push(b);
    });
    const last = values.length ? values[values.length - 1] : [null, null];
    const head =
      "<h3>" + esc(title) + '<span class="now">now: <span class="cohort-canary">canary ' + fmt(last[0]) + "</span> · baseline " + fmt(last[1]) + "</span></h3>";
    if (all.length === 0) {
      return '<div class="chart">' + head + '<div class="empty">No data yet</div></div>';
    }
    // The time the points cover (a lone point sits in the middle).
    const lone = points.length < 2;
    const t0 = points[0].t - (lone ? 30000 : 0);
    const t1 = lone ? t0 + 60000 : points[points.length - 1].t;
    const top = niceCeil(Math.max.apply(null, all) * 1.1 || 1);
    const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
    const y = (v) => T + (1 - v / top) * (H - T - B);
    let svg = '<svg viewBox="0 0 ' + W + " " + H + '" role="img" aria-label="' + esc(title) + ' over time, canary against baseline">';
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      svg += '<line class="grid-line" x1="' + L + '" x2="' + (W - R) + '" y1="' + y(v) + '" y2="' + y(v) + '"/>';
      svg += '<text class="axis-label" x="' + (L - 8) + '" y="' + (y(v) + 4) + '" text-anchor="end">' + esc(axis(v, top / 4)) + "</text>";
    }
    [t0, (t0 + t1) / 2, t1].forEach((t, i) => {
      const anchor = ["start", "middle", "end"][i];
      svg += '<text class="axis-label" x="' + x(t) + '" y="' + (H - 8) + '" text-anchor="' + anchor + '">' + esc(clock(t)) + "</text>";
    });
    const line = (which, cls) => {
      let d = "", open = false, dots = "";
      points.forEach((p, i) => {
        const v = values[i][which];
        if (v == null) {
          open = false;
          return;
        }
        d += (open ? "L" : "M") + x(p.t).toFixed(1) + " " + y(v).toFixed(1);
        open = true;
      });
      const n = values.filter((v) => v[which] != null).length;
      if (n === 1) {
        const i = values.findIndex((v) => v[which] != null);
        dots = '<circle class="dot-' + cls + '" r="4" cx="' + x(points[i].t) + '" cy="' + y(values[i][which]) + '"/>';
      }
      return (n >= 2 ? '<path class="line-' + cls + '" d="' + d + '"/>' : "") + dots;
    };
    svg += line(1, "baseline") + line(0, "canary") + "</svg>";
    return '<div class="chart">' + head + svg + "</div>";
  }

  /** Axis labels: as many decimals as the tick step needs, all alike. */
  function ticks(unit, scale) {
    return (v, step) => {
      let places = 0;
      while (places < 4 && Math.abs(Math.round(step * scale * 10 ** places) - step * scale * 10 ** places) > 1e-6) places++;
      return (v * scale).toFixed(v === 0 ? 0 : places) + unit;
    };
  }

  function niceCeil(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 1.2, 2, 4, 6, 8, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  const LEGEND =
    '<div class="legend"><span><svg viewBox="0 0 40 10"><path d="M0 5h40" class="line-canary"/></svg>canary (this release)</span>' +
    '<span><svg viewBox="0 0 40 10"><path d="M0 5h40" class="line-baseline"/></svg>baseline</span>' +
    "<span>one point every 5 s, last 30 min</span></div>";

  function charts(points) {
    const q = (name) => (p) => [p.canary[name], p.baseline[name]];
    return (
      '<section id="charts"><h2>Canary vs baseline over time</h2>' + LEGEND + '<div class="charts">' +
      chart("Error ratio", points, q("error_ratio"), pct, ticks("%", 100)) +
      chart("Latency p50", points, q("p50_ms"), ms, ticks(" ms", 1)) +
      chart("Latency p95", points, q("p95_ms"), ms, ticks(" ms", 1)) +
      chart("Latency p99", points, q("p99_ms"), ms, ticks(" ms", 1)) +
      "</div></section>"
    );
  }

  function cohortCell(c) {
    if (!c) return '<td class="muted">—</td>';
    const lines = [];
    if (c.error_ratio !== undefined) lines.push("<b>" + pct(c.error_ratio) + "</b> errors");
    if (c.p50_ms !== undefined || c.p95_ms !== undefined || c.p99_ms !== undefined)
      lines.push("p50 <b>" + ms(c.p50_ms) + "</b> · p95 <b>" + ms(c.p95_ms) + "</b> · p99 <b>" + ms(c.p99_ms) + "</b>");
    if (c.per_request !== undefined) lines.push("<b>" + num(c.per_request) + "</b> per request");
    if (c.median !== undefined) lines.push("median <b>" + num(c.median) + "</b>");
    const count = c.errors !== undefined ? int(c.errors) + " of " + int(c.requests) + " requests" : int(c.requests) + " requests";
    return "<td>" + (lines.join("<br>") || "—") + '<span class="sub">' + count + "</span></td>";
  }

  function checksTable(checks) {
    if (!checks || checks.length === 0) return '<h2>Checks</h2><p class="notice">Not judged yet.</p>';
    const rows = checks
      .map(
        (c) =>
          '<tr data-check="' + esc(c.name) + '"><td><b>' + esc(c.name) + "</b>" + (c.critical ? '<span class="sub">critical</span>' : "") + "</td>" +
          "<td>" + resultChip(c.result) + "</td>" +
          cohortCell(c.canary).replace("<td>", '<td class="canary">') +
          cohortCell(c.baseline).replace("<td>", '<td class="baseline">') +
          evidenceCell(c.evidence, c.statistic) +
          "<td>" + esc(c.detail) + "</td></tr>"
      )
      .join("");
    return (
      '<h2>Checks</h2><div class="table-wrap"><table id="checks"><thead><tr><th>Check</th><th>Result</th><th>Canary</th><th>Baseline</th>' +
      "<th>Evidence</th><th>What it means</th></tr></thead><tbody>" + rows + "</tbody></table></div>"
    );
  }

  /** The evidence in words ("no regression (ruled out beyond +10%)"); the
   *  statistic behind it one hover away. */
  function evidenceCell(words, s) {
    const stats = s
      ? "e-value " + num(s.e_value) + " · " + pValue(s.p_value) + (s.pass_p_value != null ? " · pass p " + num(s.pass_p_value) : "")
      : "";
    return '<td class="evidence"' + (stats ? ' title="' + esc(stats) + '"' : "") + ">" + esc(words || "—") +
      (stats ? '<span class="sub stat">' + esc(stats) + "</span>" : "") + "</td>";
  }

  /** "p95 180 ms" when the cohort carries it. */
  const p95 = (c) => (c && c.p95_ms != null ? '<span class="sub">p95 ' + ms(c.p95_ms) + "</span>" : "");

  const RESULT_ORDER = { fail: 0, marginal: 1, pass: 2, nodata: 3 };

  /** "81 of 1,560 failed (5.19%)" from a cohort's endpoint numbers. */
  function failedOf(c) {
    if (!c || c.requests == null) return "—";
    const errors = c.errors || 0;
    return "<b>" + int(errors) + "</b> of " + int(c.requests) + " failed" + (c.requests > 0 ? " (" + pct(errors / c.requests) + ")" : "");
  }

  /** The endpoints the judge compared, worst first: each cohort's failures
   *  and its share of the cohort's traffic (the mix), and the sentence. */
  function endpointsTable(endpoints) {
    if (!Array.isArray(endpoints) || endpoints.length === 0) return "";
    const total = (side) => endpoints.reduce((n, e) => n + ((e[side] && e[side].requests) || 0), 0);
    const all = { canary: total("canary"), baseline: total("baseline") };
    const share = (e, side) => (all[side] > 0 && e[side] ? pct((e[side].requests || 0) / all[side]) : "—");
    const sorted = endpoints
      .slice()
      .sort((x, y) => (RESULT_ORDER[x.result] ?? 9) - (RESULT_ORDER[y.result] ?? 9) || (y.e_value || 0) - (x.e_value || 0));
    const rows = sorted
      .map(
        (e) =>
          '<tr data-endpoint="' + esc(e.name) + '"><td><b>' + esc(e.name) + "</b></td>" +
          "<td>" + resultChip(e.result) + "</td>" +
          '<td class="canary">' + failedOf(e.canary) + p95(e.canary) + '<span class="sub">' + share(e, "canary") + " of the canary's requests</span></td>" +
          '<td class="baseline">' + failedOf(e.baseline) + p95(e.baseline) + '<span class="sub">' + share(e, "baseline") + " of the baseline's requests</span></td>" +
          evidenceCell(e.evidence, { e_value: e.e_value, p_value: e.e_value > 0 ? Math.min(1, 1 / e.e_value) : 1 }) +
          "<td>" + esc(e.detail) + "</td></tr>"
      )
      .join("");
    return (
      '<h2>Endpoints</h2><div class="table-wrap"><table id="endpoints"><thead><tr><th>Endpoint</th><th>Result</th>' +
      "<th>Canary</th><th>Baseline</th><th>Evidence</th><th>What it means</th></tr></thead><tbody>" + rows + "</tbody></table></div>"
    );
  }

  /** A trace id, linked only when the daemon built the link from
   *  [judge] trace_url_template, and only to http(s): telemetry text (an
   *  endpoint named like a URL) stays text. */
  function traceLink(x) {
    if (!x) return '<span class="muted">—</span>';
    return typeof x.url === "string" && /^https?:\/\//i.test(x.url)
      ? '<a href="' + esc(x.url) + '" rel="noopener noreferrer" target="_blank">' + esc(x.trace_id) + "</a>"
      : "<code>" + esc(x.trace_id) + "</code>";
  }

  /** Each kind of error the canary fails with, tested against the
   *  baseline's rate of it, worst first; kinds the baseline never showed
   *  are marked new. (An older daemon's verdict has only new_errors.) */
  function errorKindsTable(v) {
    const tested = Array.isArray(v.error_kinds) ? v.error_kinds : [];
    const requests = v.canary && v.canary.requests;
    let rows;
    if (tested.length > 0) {
      rows = tested
        .map((k) => {
          const isNew = k.baseline && k.baseline.errors === 0;
          return (
            '<tr data-kind="' + esc(k.kind) + '"><td><b>' + esc(k.kind) + "</b>" + (isNew ? '<span class="badge-new">new</span>' : "") + "</td>" +
            "<td>" + resultChip(k.result) + "</td>" +
            '<td class="canary">' + failedOf(k.canary) + "</td>" +
            '<td class="baseline">' + failedOf(k.baseline) + "</td>" +
            evidenceCell(k.evidence, { e_value: k.e_value, p_value: k.e_value > 0 ? Math.min(1, 1 / k.e_value) : 1 }) +
            "<td>" + traceLink(k.first_trace) + "</td></tr>"
          );
        })
        .join("");
    } else if (Array.isArray(v.new_errors) && v.new_errors.length > 0) {
      rows = v.new_errors
        .map(
          (k) =>
            '<tr data-kind="' + esc(k.kind) + '"><td><b>' + esc(k.kind) + '</b><span class="badge-new">new</span></td><td>' + resultChip("marginal") + "</td>" +
            '<td class="canary"><b>' + int(k.count) + "</b> failed" + (requests > 0 ? " (" + pct(k.count / requests) + " of its requests)" : "") + "</td>" +
            '<td class="baseline">0 failed</td><td>—</td><td><span class="muted">—</span></td></tr>'
        )
        .join("");
    } else {
      return "";
    }
    return (
      '<h2>Error kinds <span class="note">— why canary requests failed, against the baseline\'s rate of each</span></h2>' +
      '<div class="table-wrap"><table id="error-kinds"><thead><tr><th>Kind</th><th>Result</th><th>Canary</th><th>Baseline</th>' +
      "<th>Evidence</th><th>First trace</th></tr></thead><tbody>" + rows + "</tbody></table></div>"
    );
  }

  /** Canary requests that show why a check fails or leans: from every
   *  check's exemplars, each once. Only the trace link the daemon built
   *  from [judge] trace_url_template (`url`) becomes a link, and only to
   *  http(s): telemetry text (an endpoint named like a URL) stays text. */
  function exemplarsTable(v) {
    const seen = new Set();
    const items = [];
    (v.checks || []).forEach((c) =>
      (c.exemplars || []).forEach((x) => {
        const key = x.trace_id + "/" + x.span_id;
        if (seen.has(key)) return;
        seen.add(key);
        items.push({ check: c.name, x });
      })
    );
    if (items.length === 0) return "";
    const trace = traceLink;
    const rows = items
      .map(
        ({ check, x }) =>
          "<tr><td>" + (x.endpoint ? esc(x.endpoint) : '<span class="muted">—</span>') + "</td>" +
          '<td class="num">' + ms(x.value) + "</td>" +
          "<td>" + (x.failed ? "failed" : "slow") + '<span class="sub">' + esc(check) + "</span></td>" +
          "<td>" + trace(x) + "</td></tr>"
      )
      .join("");
    return (
      '<h2>Exemplars</h2><div class="table-wrap"><table id="exemplars"><thead><tr><th>Endpoint</th>' +
      '<th class="num">Latency</th><th>Why</th><th>Trace</th></tr></thead><tbody>' + rows + "</tbody></table></div>"
    );
  }

  function describe(e) {
    const m = e.metadata || {};
    const parts = [];
    if (m.from && m.to) parts.push(esc(String(m.from).toUpperCase()) + " → <b>" + esc(String(m.to).toUpperCase()) + "</b>");
    else if (m.verdict && e.type === "release_started") parts.push("first verdict <b>" + esc(String(m.verdict).toUpperCase()) + "</b>");
    if (m.reason) parts.push(esc(m.reason));
    if (m.baseline_deployment_id && !m.reason) parts.push("baseline " + esc(m.baseline_deployment_id));
    if (parts.length === 0) {
      const kv = Object.keys(m)
        .filter((k) => typeof m[k] !== "object")
        .slice(0, 4)
        .map((k) => esc(k) + "=" + esc(m[k]));
      parts.push(kv.join(", "));
    }
    return parts.join(": ");
  }

  function timelinePanel(t) {
    let inner;
    if (!t) inner = '<p class="notice">Loading…</p>';
    else if (t.status === 503) inner = '<p class="notice" id="timeline-off">Ledger off: the timeline needs the release ledger (<code>[ledger] path</code>).</p>';
    else if (t.status !== 200) inner = '<p class="notice">' + esc((t.body && t.body.error) || "HTTP " + t.status) + "</p>";
    else if (!t.body.events || t.body.events.length === 0) inner = '<p class="notice">No events yet.</p>';
    else {
      inner =
        '<ol class="timeline" id="timeline">' +
        t.body.events
          .map(
            (e) =>
              '<li data-type="' + esc(e.type) + '"><span class="when">' + esc(dateTime(e.ts)) + '<span class="sub">' + since(e.ts) + "</span></span>" +
              '<span class="type">' + esc(e.type.replace(/_/g, " ")) + '<span class="source">' + esc(e.source) + "</span></span>" +
              '<span class="what">' + describe(e) + "</span></li>"
          )
          .join("") +
        "</ol>";
    }
    return '<section><h2>Ledger timeline</h2>' + inner + "</section>";
  }

  function renderDetail() {
    const d = state.detail;
    const back = '<a class="back" href="#/">← All releases</a>';
    if (!d.verdict) {
      const msg = d.error ? esc(d.error) : "Loading " + esc(d.id) + "…";
      return back + '<p class="notice' + (d.error ? " error" : "") + '">' + msg + "</p>";
    }
    const v = d.verdict;
    return (
      back + banner(v, d) +
      (d.error ? '<p class="notice error">' + esc(d.error) + "</p>" : "") +
      charts(d.series || []) +
      checksTable(v.checks) +
      endpointsTable(v.endpoints) +
      errorKindsTable(v) +
      exemplarsTable(v) +
      timelinePanel(d.timeline)
    );
  }

  // --- routing and drawing ---------------------------------------------------

  function route() {
    const parts = window.location.hash.replace(/^#\/?/, "").split("/");
    if (parts[0] === "release" && parts.length >= 4) {
      const [service, environment, id] = parts.slice(1, 4).map(decodeURIComponent);
      const k = key(service, environment, id);
      if (!state.detail || state.detail.key !== k) {
        state.detail = { key: k, service: service, environment: environment, id: id, verdict: state.releases.get(k) || null };
        window.scrollTo(0, 0);
        refreshDetail();
      }
    } else {
      state.detail = null;
    }
    render();
  }

  function render() {
    renderSummary();
    const app = document.getElementById("app");
    app.innerHTML = state.detail ? renderDetail() : renderOverview();
  }

  function tickAges() {
    document.querySelectorAll("[data-since]").forEach((el) => {
      el.textContent = (el.dataset.prefix || "") + ago(el.dataset.since);
    });
  }

  window.addEventListener("hashchange", route);
  route();
  follow();
  refreshList();
  refreshDora();
  setInterval(() => {
    refreshList();
    refreshDetail();
  }, REFRESH_MS);
  setInterval(refreshDora, DORA_MS);
  setInterval(tickAges, 1000);
})();
