// stt protocol explorer: a client of a dialect (it sends the vendor's own frames) and a watcher of any live
// session (the server's feed: /explore/events). No build step, no network beyond this server.
//
// What it shows comes from the server's feed, for its own session as for any other: every frame in and out with
// the dialect's state after it, the rules broken, the close. The page's own WebSocket only drives the client
// (when to send audio, when to end). For tests, <body> carries data-states (the states passed through, in order),
// data-finals, data-rule and data-close (the server's close code), data-client-close (the code the client saw).

const BASE = "/explore";
const RATE = 16000;  // what the page sends: PCM16 mono at 16 kHz
const CHUNK = RATE / 10;  // 100 ms a frame
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const KEY = params.get("key");

// --- how each dialect's client speaks (see stt/conformance/profiles.py) -------------------------------------

const b64 = (int16) => {
  const bytes = new Uint8Array(int16.buffer, int16.byteOffset, int16.byteLength);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
};
const json = (value) => JSON.stringify(value);

const CLIENTS = {
  voicerun: {
    keyIn: null,  // Authorization: Bearer only, which a browser cannot set on a WebSocket
    start: () => [json({type: "session.update", session: {model: "nova-3", provider: "DEEPGRAM", language: "en",
                                                          input_audio_format: "pcm16", sample_rate: RATE}})],
    ready: (m) => m.type === "session.updated",
    audio: (pcm) => json({type: "audio.append", audio: b64(pcm)}),
    end: () => [json({type: "session.close"})],
    done: (m) => m.type === "session.closed",
    breaks: {"VR-ORDER-001": () => [json({type: "audio.append", audio: b64(new Int16Array(CHUNK))})],
             "VR-MSG-004": () => [new Int16Array(CHUNK).buffer],
             "VR-MSG-001": () => ["not json"]},
  },
  speechmatics: {
    keyIn: "jwt",
    start: () => [json({message: "StartRecognition",
                        audio_format: {type: "raw", encoding: "pcm_s16le", sample_rate: RATE},
                        transcription_config: {language: "en", enable_partials: true}})],
    ready: (m) => m.message === "RecognitionStarted",
    audio: (pcm) => pcm.buffer,
    end: (sent) => [json({message: "EndOfStream", last_seq_no: sent})],
    done: (m) => m.message === "EndOfTranscript",
    closeWhenDone: true,
    breaks: {"SM-ORDER-001": () => [new Int16Array(CHUNK).buffer],
             "SM-ORDER-002": () => [...CLIENTS.speechmatics.start(), new Int16Array(CHUNK).buffer]},
  },
  deepgram: {
    keyIn: null,
    keyProtocols: (key) => ["token", key],  // Deepgram's browser form: the subprotocols `token, KEY`
    query: {model: "nova-3", encoding: "linear16", sample_rate: String(RATE), channels: "1", interim_results: "true"},
    start: () => [],
    ready: () => true,
    audio: (pcm) => pcm.buffer,
    end: () => [json({type: "CloseStream"})],
    done: () => false,
    breaks: {"DG-MSG-002": () => [json({type: "Hello"})], "DG-MSG-001": () => ["not json"]},
  },
  assemblyai: {
    keyIn: "token",
    query: {sample_rate: String(RATE), encoding: "pcm_s16le"},
    start: () => [],
    ready: () => true,
    audio: (pcm) => pcm.buffer,
    end: () => [json({type: "Terminate"})],
    done: () => false,
    breaks: {"AA-MSG-003": () => [json({type: "Hello"})], "AA-MSG-001": () => ["not json"]},
  },
  yourvoic: {
    keyIn: "api_key",
    query: {model: "lucid-agent", language: "en", interim_results: "true"},
    start: () => [],
    ready: () => true,
    audio: (pcm) => pcm.buffer,
    end: () => [json({type: "close"})],
    done: () => false,
    breaks: {"YV-MSG-002": () => [json({type: "hello"})], "YV-MSG-001": () => ["not json"]},
  },
};

// What a server frame of a dialect says: {partial: text} or {final: text}; any dialect (watched sessions).
function transcriptOf(msg) {
  if (!msg || typeof msg !== "object") return null;
  const kind = msg.message || msg.type || msg.event || "";
  if (kind === "AddPartialTranscript") return {partial: msg.metadata?.transcript ?? ""};
  if (kind === "AddTranscript") return {final: msg.metadata?.transcript ?? ""};
  if (kind === "transcription.partial") return {partial: msg.text ?? ""};
  if (kind === "transcription.completed") return {final: msg.text ?? ""};
  if (kind === "transcript") return msg.is_final ? {final: msg.text ?? ""} : {partial: msg.text ?? ""};
  if (kind === "Results") {
    const text = msg.channel?.alternatives?.[0]?.transcript ?? "";
    return msg.is_final ? {final: text} : {partial: text};
  }
  if (kind === "Turn") {  // with format_turns, a formatted Turn follows the end of turn and replaces it
    return msg.end_of_turn ? {final: msg.transcript ?? "", key: `turn-${msg.turn_order}`} : {partial: msg.transcript ?? ""};
  }
  if (kind === "conversation.item.input_audio_transcription.delta") return {partial: msg.delta ?? ""};
  if (kind === "conversation.item.input_audio_transcription.completed") return {final: msg.transcript ?? ""};
  return null;
}

// --- state --------------------------------------------------------------------------------------------------

let table = null;  // /explore/dialects.json
let dialect = null;  // the chosen dialect's entry
let own = null;  // the page's own session: {ws, tag, ready, queue, sent, ended}
let watchFeed = null;  // EventSource of the watched session
let watched = null;  // the watched session's id (or the tag of the page's own, until it opens)
let capture = null;  // the microphone: {stop()}
const view = {path: [], finals: [], run: null};

function status(text) { $("status").textContent = text; }

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) k === "class" ? node.className = v : node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

// --- the chart ----------------------------------------------------------------------------------------------

async function showChart(name) {
  const response = await fetch(`${BASE}/chart/${name}.svg`);
  $("diagram").innerHTML = response.ok ? await response.text() : "";
}

function highlight(state) {
  if (!state) return;
  $("state").textContent = state;
  const previous = view.path[view.path.length - 1];
  if (previous !== undefined) {  // the edge it went along (a loop, for a frame that stays)
    const edge = document.querySelector(`#diagram .edge[data-source="${previous}"][data-target="${state}"]`);
    for (const g of document.querySelectorAll("#diagram .edge.now")) g.classList.remove("now");
    edge?.classList.add("taken", "now");
  }
  if (previous !== state) {
    view.path.push(state);
    $("path").append(el("li", {}, state));
    document.body.dataset.states = view.path.join(" ");
  }
  for (const g of document.querySelectorAll("#diagram .state")) {
    g.classList.toggle("current", g.dataset.state === state);
    if (g.dataset.state === state) g.classList.add("visited");
  }
}

// --- the frame log ------------------------------------------------------------------------------------------

function resetView() {
  view.path = []; view.finals = []; view.run = null;
  $("frames").replaceChildren(); $("path").replaceChildren(); $("verdict").replaceChildren();
  $("finals").textContent = ""; $("partial").textContent = ""; $("state").textContent = "—";
  for (const name of ["states", "finals", "rule", "close", "clientClose", "session"]) delete document.body.dataset[name];
  for (const g of document.querySelectorAll("#diagram .state")) g.classList.remove("current", "visited");
  for (const g of document.querySelectorAll("#diagram .edge")) g.classList.remove("taken", "now");
}

function pretty(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; }
}

function parsed(record) {
  if (record.type !== "text") return null;
  try { return JSON.parse(record.text); } catch { return null; }
}

// A client frame that only carries audio, or a server frame that only acknowledges it: folded into runs.
function isAudio(record) { return record.kind === "in" && record.events?.length === 1 && record.events[0] === "Audio"; }
function isAck(record) { const m = parsed(record); return record.kind === "out" && m?.message === "AudioAdded"; }

function logRow(cls, dir, meta, body) {
  const row = el("div", {class: `frame ${cls}`}, el("span", {class: "dir mono"}, dir),
                 el("span", {class: "meta mono"}, meta), el("pre", {}, body));
  $("frames").append(row);
  $("frames").scrollTop = $("frames").scrollHeight;
  return row;
}

function onRecord(record) {
  const t = `${record.t?.toFixed?.(2) ?? ""}s`;
  if (record.kind === "open") {
    document.body.dataset.session = record.session;
    for (const [id, row] of rows) row.classList.toggle("watched", id === record.session);
    $("watching").textContent = `session ${record.session} (${record.dialect} ${record.path})`;
    logRow("open", "•", t, `open ${record.path}${record.faults ? `  fault plan: ${record.faults}` : ""}`);
    highlight(record.state);
  } else if (record.kind === "in" || record.kind === "out") {
    if (isAudio(record) || (isAck(record) && view.run)) {
      if (!view.run) {
        view.run = {audio: 0, bytes: 0, acks: 0, row: logRow("in run", "→", t, "")};
      }
      if (isAudio(record)) { view.run.audio += 1; view.run.bytes += record.audio || record.bytes; }
      else view.run.acks += 1;
      view.run.row.querySelector("pre").textContent =
        `${view.run.audio} audio frames (${view.run.bytes} bytes of audio)` +
        (view.run.acks ? `, ${view.run.acks} AudioAdded` : "");
    } else {
      view.run = null;
      const body = record.type === "text" ? pretty(record.text) : `binary, ${record.bytes} bytes`;
      logRow(record.kind, record.kind === "in" ? "→" : "←", `${t} #${record.n}\n${record.state}`, body);
    }
    if (record.kind === "out") {
      const said = transcriptOf(parsed(record));
      if (said?.final !== undefined && said.final !== "") {
        if (said.key && said.key === view.lastKey) view.finals.pop();
        view.lastKey = said.key;
        view.finals.push(said.final);
        $("finals").textContent = view.finals.join(" ");
        $("partial").textContent = "";
        document.body.dataset.finals = view.finals.join(" ");
      } else if (said?.partial !== undefined) {
        $("partial").textContent = said.partial;
      }
    }
    highlight(record.state);
  } else if (record.kind === "violation") {
    view.run = null;
    logRow("violation", "✗", t, `broke ${record.rule}: ${record.requirement ?? ""}\n${record.detail ?? ""}`);
    $("verdict").append(el("div", {class: "rule"},
      el("strong", {}, record.rule), ` ${record.requirement ?? ""}`, el("br"),
      `error: ${record.error ?? "—"} (“${record.message ?? ""}”); close: ${record.close ?? "none (the session goes on)"}`));
    document.body.dataset.rule = record.rule;
  } else if (record.kind === "close") {
    view.run = null;
    logRow("close", "■", t, `closed ${record.code} (${record.ending}, ${record.rule})${record.detail ? `: ${record.detail}` : ""}`);
    $("verdict").append(el("div", {class: "closed"}, `closed with ${record.code}: ${record.ending} (${record.rule}` +
                                              `${record.message ? `: ${record.message}` : ""})`));
    document.body.dataset.close = String(record.code);
    highlight(record.state);
    if (dialect?.chart.final.length && record.state !== dialect.chart.final[0]) highlight(dialect.chart.final[0]);
  } else if (record.kind === "move") {
    if (record.server) {  // a client event's move shows with its frame; a server event's may have none
      view.run = null;
      logRow("move", "⇢", t, `${record.from} → ${record.to} (${record.event})`);
    }
    highlight(record.to);
  } else if (record.kind === "configure") {
    logRow("configure", "⚙", t, `audio: ${record.format.encoding} ${record.format.sample_rate ?? ""} Hz`);
  } else if (record.kind === "dropped") {
    logRow("dropped", "…", "", `${record.count} records dropped (the page read too slowly)`);
  } else if (record.kind === "ended") {
    watchFeed?.close();
    watchFeed = null;
  }
}

// Watch one session's feed: by id, or by the tag the page's own connection carries (it may not be open yet).
function watch(which) {
  watchFeed?.close();
  resetView();
  watched = which.session ?? which.tag;
  const query = which.session ? `session=${encodeURIComponent(which.session)}` : `tag=${encodeURIComponent(which.tag)}`;
  const feed = new EventSource(`${BASE}/events?${query}`);
  watchFeed = feed;
  return new Promise((resolve) => {
    feed.onopen = () => resolve();
    feed.onmessage = (event) => onRecord(JSON.parse(event.data));
    feed.onerror = () => { if (feed.readyState === EventSource.CLOSED) resolve(); };
  });
}

// --- the session list ---------------------------------------------------------------------------------------

const rows = new Map();

function onSession(s) {
  let row = rows.get(s.session);
  if (!row) {
    const button = el("button", {type: "button"}, "watch");
    button.addEventListener("click", async () => {
      const entry = table.dialects.find((d) => d.name === s.dialect);
      if (entry && entry !== dialect) { $("dialect").value = entry.name; await choose(entry.name, false); }
      watch({session: s.session});
    });
    row = el("tr", {"data-session": s.session}, el("td", {class: "mono"}, s.session), el("td", {}, s.dialect),
             el("td", {class: "mono"}), el("td"), el("td"), el("td", {}, button));
    rows.set(s.session, row);
    $("session-list").prepend(row);
    while (rows.size > 40) { const [first] = rows.keys(); rows.get(first).remove(); rows.delete(first); }
  }
  row.children[2].textContent = s.state;
  row.children[3].textContent = s.frames;
  row.children[4].textContent = s.close ?? "";
  row.classList.toggle("ended", s.ended);
  row.classList.toggle("watched", s.session === document.body.dataset.session);
}

function listSessions() {
  const feed = new EventSource(`${BASE}/events`);
  feed.onmessage = (event) => { const r = JSON.parse(event.data); if (r.kind === "session") onSession(r); };
}

// --- the page's own session ---------------------------------------------------------------------------------

function endpoint(extra = {}) {
  const client = CLIENTS[dialect.name];
  const query = new URLSearchParams({...(client?.query ?? {}), ...extra});
  if (KEY && client?.keyIn) query.set(client.keyIn, KEY);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const qs = query.toString();
  return `${scheme}://${location.host}${dialect.path}${qs ? `?${qs}` : ""}`;
}

function canSpeak() {
  const client = CLIENTS[dialect?.name];
  if (!client) return `the page has no client for ${dialect?.name} yet: watch a session of it instead`;
  if (table.keys_required && !client.keyIn && !client.keyProtocols) {
    return `${dialect.name} takes its key in a header a browser cannot set on a WebSocket`;
  }
  if (table.keys_required && !KEY) return "this server wants an API key: open the page with ?key=KEY";
  return null;
}

// Open the page's own session: its feed first (by tag), then the WebSocket; `first` are frames sent at once.
async function openSession({first = null, fault = $("fault").value} = {}) {
  stopSession();
  const client = CLIENTS[dialect.name];
  const tag = Math.random().toString(36).slice(2, 12);
  await watch({tag});
  const extra = {stt_watch: tag};
  if (fault) extra.stt_fault = fault;
  const ws = new WebSocket(endpoint(extra), KEY && client.keyProtocols ? client.keyProtocols(KEY) : []);
  ws.binaryType = "arraybuffer";
  const session = own = {ws, tag, ready: false, queue: [], sent: 0, ending: false};
  ws.onopen = () => {
    for (const frame of first ?? client.start()) ws.send(frame);
    if (!first && client.ready({})) markReady(session);
  };
  ws.onmessage = (event) => {
    if (typeof event.data !== "string") return;
    let msg = null;
    try { msg = JSON.parse(event.data); } catch { return; }
    if (!session.ready && client.ready(msg)) markReady(session);
    if (client.done(msg) && client.closeWhenDone) ws.close(1000);
  };
  ws.onclose = (event) => {
    document.body.dataset.clientClose = String(event.code);
    status(`the connection closed: ${event.code}${event.reason ? ` ${event.reason}` : ""}`);
    if (own === session) { own = null; stopCapture(); buttons(); }
  };
  buttons();
  return session;
}

function markReady(session) {
  session.ready = true;
  for (const pcm of session.queue.splice(0)) sendAudio(session, pcm);
  if (session.ending) endSession(session);
}

function sendAudio(session, pcm) {
  if (session.ws.readyState !== WebSocket.OPEN || session.endSent) return;
  if (!session.ready) { if (session.queue.length < 600) session.queue.push(pcm); return; }
  session.ws.send(CLIENTS[dialect.name].audio(pcm));
  session.sent += 1;
}

function endSession(session) {
  session.ending = true;
  if (!session.ready || session.endSent || session.ws.readyState !== WebSocket.OPEN) return;
  session.endSent = true;
  for (const frame of CLIENTS[dialect.name].end(session.sent)) session.ws.send(frame);
  status("end of audio sent: waiting for the last results");
}

function stopSession() {
  stopCapture();
  if (own && own.ws.readyState <= WebSocket.OPEN) own.ws.close(1000);
  own = null;
}

// --- audio: the microphone, or a file, as PCM16 at 16 kHz in 100 ms frames ------------------------------------

class Chunker {
  // Resamples float samples at `rate` to RATE (linear interpolation) and hands out CHUNK-sample Int16Arrays.
  constructor(rate, send) { this.step = rate / RATE; this.pos = 0; this.last = 0; this.out = []; this.send = send; }
  push(samples) {
    // y(0) is the last sample of the previous buffer, y(k) samples[k - 1]: positions are in y's coordinates.
    const n = samples.length, y = (k) => (k === 0 ? this.last : samples[k - 1]);
    let pos = this.pos;
    for (; pos < n; pos += this.step) {
      const i = Math.floor(pos), frac = pos - i;
      const v = Math.max(-1, Math.min(1, y(i) + (y(i + 1) - y(i)) * frac));
      this.out.push(v < 0 ? v * 0x8000 : v * 0x7fff);
      if (this.out.length >= CHUNK) { this.send(Int16Array.from(this.out)); this.out = []; }
    }
    this.pos = pos - n;
    if (n) this.last = samples[n - 1];
  }
  flush() {  // the last frame padded with silence to 100 ms: AssemblyAI refuses a frame under 50 ms (AA-AUDIO-001)
    if (this.out.length) { const last = new Int16Array(CHUNK); last.set(this.out); this.send(last); }
    this.out = [];
  }
}

async function speak() {
  const problem = canSpeak();
  if (problem) { status(problem); return; }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({audio: {channelCount: 1, echoCancellation: false}});
  } catch (error) { status(`no microphone: ${error.message}`); return; }
  const session = await openSession();
  const context = new AudioContext();
  const source = context.createMediaStreamSource(stream);
  const processor = context.createScriptProcessor(4096, 1, 1);
  const chunker = new Chunker(context.sampleRate, (pcm) => sendAudio(session, pcm));
  processor.onaudioprocess = (event) => chunker.push(event.inputBuffer.getChannelData(0));
  source.connect(processor);
  processor.connect(context.destination);
  capture = {stop() {
    processor.disconnect(); source.disconnect(); stream.getTracks().forEach((t) => t.stop()); context.close();
    chunker.flush();
    endSession(session);
  }};
  status(`listening (${context.sampleRate} Hz, sent as 16 kHz PCM16): speak, then Stop`);
  buttons();
}

function stopCapture() { const c = capture; capture = null; c?.stop(); }

async function sendFile(file) {
  const problem = canSpeak();
  if (problem) { status(problem); return; }
  const data = await file.arrayBuffer();
  let samples;
  try {
    const decoded = await new AudioContext().decodeAudioData(data);
    const offline = new OfflineAudioContext(1, Math.ceil(decoded.duration * RATE), RATE);
    const source = offline.createBufferSource();
    source.buffer = decoded;
    source.connect(offline.destination);
    source.start();
    samples = (await offline.startRendering()).getChannelData(0);
  } catch (error) { status(`cannot decode ${file.name}: ${error.message}`); return; }
  const session = await openSession();
  status(`sending ${file.name} (${(samples.length / RATE).toFixed(1)} s) in real time`);
  const chunker = new Chunker(RATE, (pcm) => sendAudio(session, pcm));
  for (let i = 0; i < samples.length && own === session; i += CHUNK) {
    chunker.push(samples.subarray(i, i + CHUNK));
    await new Promise((r) => setTimeout(r, 100));
  }
  chunker.flush();
  endSession(session);
}

async function breakRule() {
  const rule = $("rule").value;
  const client = CLIENTS[dialect.name];
  const problem = canSpeak();
  if (problem || !client?.breaks[rule]) { status(problem ?? "pick a rule"); return; }
  status(`breaking ${rule}: ${dialect.chart.rules[rule]?.requirement ?? ""}`);
  const session = await openSession({first: client.breaks[rule](), fault: ""});
  if (!dialect.chart.rules[rule]?.close) {  // the session goes on after a rule that does not close: end it
    setTimeout(() => { session.ready = true; endSession(session); }, 1000);
  }
}

// --- the controls -------------------------------------------------------------------------------------------

function buttons() {
  const problem = dialect ? canSpeak() : "loading";
  $("speak").disabled = !!problem || !!own;
  $("stop").disabled = !own;
  $("break").disabled = !!problem || !$("rule").value;
  $("file").disabled = !!problem;
}

async function choose(name, reset = true) {
  dialect = table.dialects.find((d) => d.name === name);
  $("endpoint").textContent = `${dialect.path}  (${dialect.title})`;
  const breaks = Object.keys(CLIENTS[name]?.breaks ?? {});
  $("rule").replaceChildren(...breaks.map((id) => el("option", {value: id},
    `${id}: ${dialect.chart.rules[id]?.message ?? ""}`)));
  const faults = ["", "drop@1s", "close=4000@1s", "shutdown@1s", "stall@1s",
                  ...Object.entries(dialect.chart.rules).filter(([, r]) => r.error && r.close)
                    .map(([id]) => `error=${id}@1s`)];
  $("fault").replaceChildren(...faults.map((f) => el("option", {value: f}, f || "none")));
  $("fault").disabled = !table.client_faults;
  $("fault-note").textContent = table.client_faults ? "" : "(the server does not allow client faults: --allow-client-faults)";
  await showChart(name);
  if (reset) resetView();
  status(canSpeak() ?? "ready: Speak, drop a file, or break a rule");
  buttons();
}

async function main() {
  table = await (await fetch(`${BASE}/dialects.json`)).json();
  $("server").textContent = `stt ${table.version}`;
  const names = table.dialects.map((d) => d.name);
  $("dialect").replaceChildren(...names.map((n) => el("option", {value: n}, CLIENTS[n] ? n : `${n} (watch only)`)));
  const first = params.get("dialect") && names.includes(params.get("dialect")) ? params.get("dialect")
    : names.find((n) => CLIENTS[n]);
  $("dialect").value = first;
  $("dialect").addEventListener("change", () => { stopSession(); choose($("dialect").value); });
  $("speak").addEventListener("click", speak);
  $("stop").addEventListener("click", () => { stopCapture(); if (own) endSession(own); buttons(); });
  $("break").addEventListener("click", breakRule);
  $("file").addEventListener("change", () => { const f = $("file").files[0]; if (f) sendFile(f); });
  document.addEventListener("dragover", (e) => { e.preventDefault(); document.body.classList.add("dragging"); });
  document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
  document.addEventListener("drop", (e) => {
    e.preventDefault(); document.body.classList.remove("dragging");
    const f = e.dataTransfer.files[0]; if (f) sendFile(f);
  });
  await choose(first);
  listSessions();
  document.body.dataset.loaded = "1";
}

main().catch((error) => { status(`the explorer failed to start: ${error.message}`); throw error; });
