// s2i-fast drawing page: a canvas, a class and a seed in; the generated image out, live.
//
// Live channel (WebSocket /v1/ws): at most one request in flight and one pending. The pending
// one is a flag, not a message: when the answer to the request in flight arrives, the canvas
// as it is *then* is sent, so the newest drawing always replaces older unsent ones and answers
// never back up. An answer older than the image on screen is dropped. While a stroke is in
// progress requests are also throttled; the end of a stroke is sent at once.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const canvas = $("sketch");
  const ctx = canvas.getContext("2d");
  const SIZE = canvas.width; // 256: the Sketchy sketches' size; the server resizes to the model
  const THROTTLE_MS = 60; // mid-stroke: at most one request per this many ms
  let variations = 6; // images in the variations strip (at most the server's limit)
  const WATCHDOG_MS = 15000; // give up on an answer after this long (and send again)
  const MAX_SEED = 2 ** 31; // shuffle draws seeds below this

  const draw = {
    tool: "pen",
    width: Number($("width").value),
    history: [], // ops: {type: "stroke", tool, width, points} | {type: "image", image} | {type: "clear"}
    undone: [],
    stroke: null, // the stroke in progress (with its pointerId)
  };

  const live = {
    ws: null,
    open: false,
    seq: 0, // request ids, increasing
    inFlight: null, // {id, n, sentAt}
    dirty: false, // the one pending single-image request
    wantVariations: false, // a pending variations request
    lastSent: 0,
    lastShown: 0, // id of the answer on screen
    version: 0, // bumped when the sketch or the class changes: older variations are dropped
    dropped: 0, // stale answers not shown
    retryAt: 0, // after a 503: not before this time
    timer: null,
    backoff: 500,
  };

  // ------------------------------------------------------------------ canvas
  function paintWhite() {
    ctx.save();
    ctx.globalCompositeOperation = "source-over";
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, SIZE, SIZE);
    ctx.restore();
  }

  function strokeSegment(stroke, from) {
    // draw stroke.points[from-1 .. end] (from = 0: the whole stroke)
    const p = stroke.points;
    ctx.save();
    ctx.strokeStyle = ctx.fillStyle = stroke.tool === "eraser" ? "#fff" : "#000";
    ctx.lineWidth = stroke.width;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    if (p.length === 1) {
      ctx.beginPath();
      ctx.arc(p[0][0], p[0][1], stroke.width / 2, 0, 2 * Math.PI);
      ctx.fill();
    } else {
      const start = Math.max(from - 1, 0);
      ctx.beginPath();
      ctx.moveTo(p[start][0], p[start][1]);
      for (let i = start + 1; i < p.length; i++) ctx.lineTo(p[i][0], p[i][1]);
      ctx.stroke();
    }
    ctx.restore();
  }

  function paintImage(image) {
    // an uploaded sketch replaces the drawing, fitted into the square on white
    paintWhite();
    const scale = Math.min(SIZE / image.width, SIZE / image.height);
    const w = image.width * scale;
    const h = image.height * scale;
    ctx.save();
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(image, (SIZE - w) / 2, (SIZE - h) / 2, w, h);
    ctx.restore();
  }

  function apply(op) {
    if (op.type === "stroke") strokeSegment(op, 0);
    else if (op.type === "image") paintImage(op.image);
    else if (op.type === "clear") paintWhite();
  }

  function repaint() {
    paintWhite();
    for (const op of draw.history) apply(op);
  }

  function commit(op) {
    draw.history.push(op);
    draw.undone = [];
    changed();
  }

  function changed() {
    live.version += 1;
    $("undo").disabled = draw.history.length === 0;
    $("redo").disabled = draw.undone.length === 0;
    clearStrip();
    request();
  }

  function undo() {
    if (draw.stroke || !draw.history.length) return;
    draw.undone.push(draw.history.pop());
    repaint();
    changed();
  }

  function redo() {
    if (draw.stroke || !draw.undone.length) return;
    const op = draw.undone.pop();
    draw.history.push(op);
    apply(op);
    changed();
  }

  function clearDrawing() {
    if (draw.stroke) return;
    const last = draw.history[draw.history.length - 1];
    if (!last || last.type === "clear") return;
    const op = { type: "clear" };
    apply(op);
    commit(op);
  }

  function canvasPoint(e) {
    const r = canvas.getBoundingClientRect();
    return [((e.clientX - r.left) * SIZE) / r.width, ((e.clientY - r.top) * SIZE) / r.height];
  }

  canvas.addEventListener("pointerdown", (e) => {
    if (draw.stroke || (e.pointerType === "mouse" && e.button !== 0)) return;
    e.preventDefault();
    canvas.setPointerCapture(e.pointerId);
    draw.stroke = {
      type: "stroke", tool: draw.tool, width: draw.width, points: [canvasPoint(e)],
      pointerId: e.pointerId,
    };
    strokeSegment(draw.stroke, 0);
    request();
  });

  canvas.addEventListener("pointermove", (e) => {
    const s = draw.stroke;
    if (!s || e.pointerId !== s.pointerId) return;
    const from = s.points.length;
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
    for (const ev of events.length ? events : [e]) s.points.push(canvasPoint(ev));
    strokeSegment(s, from);
    request();
  });

  function endStroke(e) {
    const s = draw.stroke;
    if (!s || e.pointerId !== s.pointerId) return;
    draw.stroke = null;
    delete s.pointerId;
    draw.history.push(s);
    draw.undone = [];
    repaint(); // render the committed drawing as undo/redo will: one path per stroke
    changed(); // sends at once: the stroke has ended
  }
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);

  // ------------------------------------------------------------------ upload / drop
  async function openSketch(file) {
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) {
      showError(`${file.name} is not an image`);
      return;
    }
    let image;
    try {
      image = await createImageBitmap(file);
    } catch (err) {
      showError(`could not read ${file.name} as an image`);
      return;
    }
    const op = { type: "image", image };
    apply(op);
    commit(op);
  }

  $("upload").addEventListener("change", (e) => {
    openSketch(e.target.files[0]);
    e.target.value = "";
  });
  const dropZone = $("drop-zone");
  for (const type of ["dragenter", "dragover"]) {
    dropZone.addEventListener(type, (e) => {
      e.preventDefault();
      dropZone.classList.add("dragging");
    });
  }
  dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
  dropZone.addEventListener("drop", (e) => {
    e.preventDefault();
    dropZone.classList.remove("dragging");
    openSketch(e.dataTransfer && e.dataTransfer.files[0]);
  });
  // a file dropped beside the canvas must not navigate away from the page
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => e.preventDefault());

  // ------------------------------------------------------------------ tools
  function setTool(tool) {
    draw.tool = tool;
    $("tool-pen").setAttribute("aria-pressed", String(tool === "pen"));
    $("tool-eraser").setAttribute("aria-pressed", String(tool === "eraser"));
  }
  function stepWidth(step) {
    const sel = $("width");
    sel.selectedIndex = Math.min(Math.max(sel.selectedIndex + step, 0), sel.options.length - 1);
    draw.width = Number(sel.value);
  }
  $("tool-pen").addEventListener("click", () => setTool("pen"));
  $("tool-eraser").addEventListener("click", () => setTool("eraser"));
  $("width").addEventListener("change", (e) => { draw.width = Number(e.target.value); });
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  $("clear").addEventListener("click", clearDrawing);

  function shuffle() {
    const r = new Uint32Array(1);
    crypto.getRandomValues(r);
    $("seed").value = String(r[0] % MAX_SEED);
    request();
  }
  $("shuffle").addEventListener("click", shuffle);
  $("seed").addEventListener("input", () => request());
  $("class").addEventListener("change", () => {
    live.version += 1;
    clearStrip();
    request();
  });
  $("variations").addEventListener("click", () => { live.wantVariations = true; pump(); });

  document.addEventListener("keydown", (e) => {
    if (e.target.closest && e.target.closest("input, select, textarea")) return;
    const mod = e.ctrlKey || e.metaKey;
    const key = e.key.toLowerCase();
    let handled = true;
    if (mod && key === "z") (e.shiftKey ? redo : undo)();
    else if (mod && key === "y") redo();
    else if (mod || e.altKey) handled = false;
    else if (key === "delete" || key === "backspace") clearDrawing();
    else if (key === "p") setTool("pen");
    else if (key === "e") setTool("eraser");
    else if (key === "[") stepWidth(-1);
    else if (key === "]") stepWidth(1);
    else if (key === "s") shuffle();
    else if (key === "v") { live.wantVariations = true; pump(); }
    else handled = false;
    if (handled) e.preventDefault();
  });

  // ------------------------------------------------------------------ downloads
  function download(href, name) {
    const a = document.createElement("a");
    a.href = href;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
  }
  const safe = (s) => String(s).replace(/[^\w.-]+/g, "_");
  $("download-sketch").addEventListener("click", () => {
    canvas.toBlob((blob) => {
      const url = URL.createObjectURL(blob);
      download(url, "sketch.png");
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    }, "image/png");
  });
  $("download-image").addEventListener("click", () => {
    const img = $("result");
    if (!img.src) return;
    download(img.src, `s2i-${safe(img.dataset.class)}-seed${img.dataset.seed}.png`);
  });

  // ------------------------------------------------------------------ live channel
  function request() {
    live.dirty = true;
    pump();
  }

  function schedule(ms) {
    if (live.timer) return;
    live.timer = setTimeout(() => { live.timer = null; pump(); }, Math.max(ms, 0));
  }

  function setBusy() {
    // "true" while a request is in flight or pending: the image on screen may change
    const busy = Boolean(live.inFlight || live.dirty || live.wantVariations);
    document.body.dataset.busy = String(busy);
  }

  function pump() {
    pumpOnce();
    setBusy();
  }

  function pumpOnce() {
    if (!live.open || live.inFlight) return;
    const now = performance.now();
    if (now < live.retryAt) return schedule(live.retryAt - now);
    if (live.wantVariations) {
      live.wantVariations = false;
      return send(variations);
    }
    if (!live.dirty) return;
    if (draw.stroke && now - live.lastSent < THROTTLE_MS) {
      return schedule(THROTTLE_MS - (now - live.lastSent));
    }
    live.dirty = false;
    send(1);
  }

  function send(n) {
    const id = ++live.seq;
    const message = {
      id,
      sketch: canvas.toDataURL("image/png"),
      class: Number($("class").value),
      seed: $("seed").value, // the server validates and says what is wrong
      n,
    };
    live.inFlight = { id, n, sentAt: performance.now(), version: live.version };
    live.lastSent = live.inFlight.sentAt;
    live.ws.send(JSON.stringify(message));
    setTimeout(() => {
      if (live.inFlight && live.inFlight.id === id) {
        live.inFlight = null; // lost: try again with the current drawing
        if (n === 1) live.dirty = true;
        pump();
      }
    }, WATCHDOG_MS);
  }

  function onMessage(event) {
    let reply;
    try {
      reply = JSON.parse(event.data);
    } catch (err) {
      return;
    }
    const sent = live.inFlight && live.inFlight.id === reply.id ? live.inFlight : null;
    if (sent) live.inFlight = null;
    const rtt = sent ? performance.now() - sent.sentAt : null;
    if (reply.stale) {
      // skipped by the server for a newer message
    } else if (reply.error) {
      showError(reply.error);
      if (reply.status === 503 && sent) {
        live.retryAt = performance.now() + 1000 * (reply.retry_after || 1);
        if (sent.n === 1) live.dirty = true;
        else live.wantVariations = true;
      }
    } else if (reply.images.length > 1) {
      if (sent && sent.version === live.version) showStrip(reply); // else: for an older sketch
    } else if (reply.id <= live.lastShown) {
      live.dropped += 1; // a newer drawing's image is already on screen
    } else {
      showResult(reply, rtt);
    }
    pump();
  }

  function connect() {
    setConnection("connecting", "connecting…");
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + "/v1/ws");
    live.ws = ws;
    ws.onopen = () => {
      live.open = true;
      live.backoff = 500;
      setConnection("open", "live");
      request(); // show the current drawing's image
    };
    ws.onmessage = onMessage;
    ws.onclose = () => {
      live.open = false;
      live.inFlight = null;
      setConnection("closed", "disconnected, retrying…");
      setTimeout(connect, live.backoff);
      live.backoff = Math.min(live.backoff * 2, 5000);
    };
  }

  // ------------------------------------------------------------------ output
  function setConnection(state, text) {
    const el = $("conn");
    el.dataset.state = state;
    el.textContent = text;
  }

  function showError(message) {
    $("error").textContent = message;
  }

  function showResult(reply, rtt) {
    const img = $("result");
    img.src = "data:image/png;base64," + reply.images[0];
    img.dataset.seed = String(reply.seeds[0]);
    img.dataset.class = reply.class;
    img.dataset.shown = String(Number(img.dataset.shown) + 1);
    img.alt = `generated ${reply.class}, seed ${reply.seeds[0]}`;
    live.lastShown = reply.id;
    $("server-ms").textContent = reply.server_ms.toFixed(1);
    $("rtt-ms").textContent = rtt === null ? "–" : rtt.toFixed(1);
    $("download-image").disabled = false;
    showError("");
  }

  function clearStrip() {
    $("strip").replaceChildren();
  }

  function showStrip(reply) {
    const strip = $("strip");
    strip.replaceChildren();
    reply.images.forEach((b64, i) => {
      const seed = reply.seeds[i];
      const img = document.createElement("img");
      img.src = "data:image/png;base64," + b64;
      img.alt = img.title = `seed ${seed}`;
      img.dataset.seed = String(seed);
      img.tabIndex = 0;
      const pick = () => {
        $("seed").value = String(seed);
        request(); // the main image follows the picked seed
      };
      img.addEventListener("click", pick);
      img.addEventListener("keydown", (e) => { if (e.key === "Enter") pick(); });
      strip.appendChild(img);
    });
    showError("");
  }

  // ------------------------------------------------------------------ start
  async function start() {
    paintWhite();
    try {
      const [info, classes] = await Promise.all([
        fetch("/v1/info").then((r) => r.json()),
        fetch("/v1/classes").then((r) => r.json()),
      ]);
      $("model-info").textContent =
        `${info.model} · ${info.backend} ${info.precision} on ${info.device} · ` +
        `${info.resolution}×${info.resolution} · v${info.version}`;
      variations = Math.min(variations, info.limits.max_variations);
      const select = $("class");
      for (const c of classes.classes) select.add(new Option(c.name, String(c.id)));
    } catch (err) {
      showError("cannot reach the server; retrying…");
      setTimeout(start, 2000);
      return;
    }
    connect();
  }
  start();
})();
