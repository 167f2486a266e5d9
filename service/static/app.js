// The gaitlu web page: pick a probe (upload or demo), see it animated with its GEI, search a gallery.
// A video probe also shows a few of its frames beside the silhouettes the service extracted from them.
// A calibrated model's scores come with their false accept rate, and a search decides at a chosen FAR:
// the match, or "no match" (not in the gallery); a probe can also be verified against one subject.
// A match shows its review state: two different people (API keys) confirm it before anyone acts on it.
// Plain browser JavaScript, no build step; every data call goes to this origin with the stored API key.
"use strict";

const KEY_STORAGE = "gaitlu.apiKey";
const FPS = 25; // CASIA-B's frame rate
const SCALE = 4; // canvas pixels per frame pixel
const PNG_PREFIX = "data:image/png;base64,";
const JPEG_PREFIX = "data:image/jpeg;base64,";
const VIDEO_SUFFIXES = [".mp4", ".m4v", ".avi", ".mkv", ".mov", ".webm"];

const $ = (id) => document.getElementById(id);
const state = {
  probe: null, // the File being shown and searched with
  generation: 0, // bumped per probe: late answers about an older probe are dropped
  frames: [],
  index: 0,
  timer: null,
  model: null, // GET /model: the hash and, once calibrated, what its FARs come from
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// ----- talking to the service

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = $("api-key").value.trim();
  if (key) headers.set("X-API-Key", key);
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch {
    throw new ApiError(0, "unreachable", "The service did not answer. Is it running?");
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

async function errorFrom(response) {
  let code = `http_${response.status}`;
  let message = response.statusText || "The request failed.";
  try {
    const body = await response.json(); // {"error": {"code", "message", ...}}
    if (body && body.error) ({ code, message } = body.error);
  } catch {
    // not the service's JSON (a proxy's page): keep the status line
  }
  if (response.status === 401) message += ". Enter an API key at the top of the page.";
  return new ApiError(response.status, code, message);
}

function showError(id, error) {
  const element = $(id);
  element.hidden = !error;
  element.replaceChildren();
  if (!error) return;
  const code = document.createElement("span");
  code.className = "code";
  code.textContent = error.code || "error";
  element.append(code, " ", error.message);
}

const isPng = (uri) => typeof uri === "string" && uri.startsWith(PNG_PREFIX);
const isJpeg = (uri) => typeof uri === "string" && uri.startsWith(JPEG_PREFIX);
const isVideo = (file) =>
  file.type.startsWith("video/") || VIDEO_SUFFIXES.some((s) => file.name.toLowerCase().endsWith(s));
const path = (...parts) => parts.map(encodeURIComponent).join("/");

// ----- API key

// A key handed over in the address, as `make run` prints it (http://127.0.0.1:8000/#key=...; ?key=...
// works too), like a notebook server's token URL: stored as if typed, then removed from the address bar
// and the history entry, so it is neither bookmarked nor shown.
function takeKeyFromAddress() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("key");
  const fromQuery = new URLSearchParams(location.search).get("key");
  if (fromHash === null && fromQuery === null) return;
  const key = (fromHash ?? fromQuery).trim();
  if (key) localStorage.setItem(KEY_STORAGE, key);
  const url = new URL(location.href);
  url.searchParams.delete("key");
  history.replaceState(history.state, "", url.pathname + url.search);
}

function initKey() {
  takeKeyFromAddress();
  $("api-key").value = localStorage.getItem(KEY_STORAGE) || "";
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    saveKey();
  });
  $("api-key").addEventListener("change", saveKey);
  $("key-forget").addEventListener("click", () => {
    $("api-key").value = "";
    saveKey();
  });
}

function saveKey() {
  const key = $("api-key").value.trim();
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
  loadGalleries();
  loadDemos();
  loadModel();
}

// ----- the model and what its scores mean

async function loadModel() {
  try {
    state.model = await (await api("/model")).json();
  } catch {
    state.model = null; // the galleries' error already tells why
  }
  const calibrated = Boolean(state.model && state.model.calibration);
  const select = $("max-far");
  select.disabled = !calibrated;
  $("far-help").textContent = calibrated
    ? `How often someone else may pass for a match (calibrated on ${state.model.calibration.dataset}).`
    : "Scores only: this model is not calibrated (gaitlu calibrate).";
}

function farFloor(comparison) {
  const calibration = state.model && state.model.calibration;
  const found = calibration && calibration.comparisons.find((c) => c.comparison === comparison);
  return found ? found.far_floor : 0;
}

// A FAR as people read it: "about 1 in 2,300 people who are not s3 score this high".
function farWords(far, who, comparison = "subject") {
  if (far === null || far === undefined) return "no FAR: the model is not calibrated";
  const atFloor = far <= farFloor(comparison) * 1.000001;
  const n = Math.max(1, Math.round(1 / far)).toLocaleString("en");
  return `${atFloor ? "fewer than" : "about"} 1 in ${n} people who are not ${who} score this high`;
}

const farLevel = (far) => `1 in ${Math.round(1 / far).toLocaleString("en")}`;

function searchFilter() {
  const list = (id) =>
    $(id)
      .value.split(",")
      .map((v) => v.trim())
      .filter(Boolean);
  const filter = {};
  for (const [key, id] of [
    ["camera", "filter-camera"],
    ["site", "filter-site"],
    ["tags_any", "filter-tags"],
  ]) {
    const values = list(id);
    if (values.length) filter[key] = values;
  }
  return Object.keys(filter).length ? filter : null;
}

function decisionFar() {
  const select = $("max-far");
  return select.disabled ? "" : select.value;
}

// ----- galleries

async function loadGalleries() {
  showError("galleries-error", null);
  let galleries = [];
  try {
    galleries = (await (await api("/galleries")).json()).data;
  } catch (error) {
    showError("galleries-error", error);
  }
  renderGalleries(galleries);
}

function renderGalleries(galleries) {
  const body = $("galleries-table").tBodies[0];
  const select = $("gallery-select");
  const previous = select.value;
  body.replaceChildren();
  select.replaceChildren();
  for (const gallery of galleries) {
    const row = body.insertRow();
    row.insertCell().textContent = gallery.name;
    row.insertCell().textContent = gallery.subject_count.toLocaleString();
    row.insertCell().textContent = gallery.sequence_count.toLocaleString();
    const model = row.insertCell();
    model.textContent = gallery.model_matches ? "current" : "other model";
    model.className = gallery.model_matches ? "ok" : "warn";
    const label = `${gallery.name} (${gallery.subject_count} subjects, ${gallery.sequence_count} sequences)`;
    const option = new Option(label, gallery.name);
    option.disabled = !gallery.model_matches; // searching it would answer 409 model_mismatch
    select.add(option);
  }
  if ([...select.options].some((o) => o.value === previous && !o.disabled)) select.value = previous;
  $("galleries-table").hidden = galleries.length === 0;
  $("galleries-empty").hidden = galleries.length > 0 || !$("galleries-error").hidden;
  updateSearchButton();
}

function updateSearchButton() {
  $("search-button").disabled = !(state.probe && $("gallery-select").value);
}

// ----- probe: upload or demo, then preview

async function loadDemos() {
  const select = $("demo-select");
  select.replaceChildren(new Option("Choose a demo sequence…", ""));
  try {
    const demos = (await (await api("/demo/sequences")).json()).data;
    for (const demo of demos) select.add(new Option(demo.name, demo.name));
    select.disabled = false;
  } catch (error) {
    select.replaceChildren(new Option(`Demo sequences unavailable (${error.code})`, ""));
    select.disabled = true;
  }
}

async function pickDemo() {
  const name = $("demo-select").value;
  if (!name) return;
  $("sequence-file").value = "";
  try {
    const blob = await (await api(`/demo/sequences/${path(name)}`)).blob();
    await useProbe(new File([blob], name));
  } catch (error) {
    showError("probe-error", error);
  }
}

async function pickFile() {
  const file = $("sequence-file").files[0];
  if (!file) return;
  $("demo-select").value = "";
  await useProbe(file);
}

async function useProbe(file) {
  const generation = ++state.generation;
  state.probe = null;
  showError("probe-error", null);
  clearResults("Pick a gallery to search in.");
  $("probe-status").textContent = isVideo(file)
    ? `Extracting the walking person from ${file.name}…`
    : `Reading ${file.name}…`;
  const form = new FormData();
  form.append("files", file, file.name);
  try {
    const preview = await (await api("/sequences/preview", { method: "POST", body: form })).json();
    const frames = await Promise.all(preview.data.map(loadImage));
    if (generation !== state.generation) return;
    state.probe = file;
    showPreview(preview, frames);
  } catch (error) {
    if (generation !== state.generation) return;
    stopAnimation();
    $("viewer").hidden = true;
    $("video-view").hidden = true;
    $("probe-status").textContent = "";
    showError("probe-error", error);
    return;
  } finally {
    updateSearchButton();
  }
  if ($("gallery-select").value) await search();
}

function loadImage(uri) {
  return new Promise((resolve, reject) => {
    if (!isPng(uri)) {
      reject(new ApiError(0, "bad_image", "The service sent a frame that is not a PNG."));
      return;
    }
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new ApiError(0, "bad_image", "A frame could not be decoded."));
    image.src = uri;
  });
}

function showPreview(preview, frames) {
  const canvas = $("animation");
  canvas.width = preview.width * SCALE;
  canvas.height = preview.height * SCALE;
  const gei = $("probe-gei");
  gei.width = canvas.width;
  gei.height = canvas.height;
  if (isPng(preview.gei)) gei.src = preview.gei;
  else gei.removeAttribute("src");
  facts([
    ["Sequence", preview.name],
    ["Frames", `${preview.frames} (${preview.height} × ${preview.width}, aligned)`],
    ["Duration", `${(preview.frames / FPS).toFixed(1)} s at ${FPS} fps`],
    ...(preview.video ? trackFacts(preview.video.track) : []),
    ["Decoded in", `${preview.decode_ms.toFixed(1)} ms`],
  ]);
  showVideoFrames(preview, frames);
  $("probe-status").textContent = "";
  $("viewer").hidden = false;
  state.frames = frames;
  state.index = 0;
  play();
}

function facts(pairs) {
  const list = $("probe-facts");
  list.replaceChildren();
  for (const [term, value] of pairs) {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = term;
    dd.textContent = value;
    list.append(dt, dd);
  }
}

function trackFacts(track) {
  const video = track.video;
  const [first, last] = track.frame_range;
  return [
    ["Video", `${video.width} × ${video.height}, ${video.frame_count || "?"} frames at ${video.fps || "?"} fps`],
    ["Track", `#${track.index} of ${track.tracks_found} found (${track.method}), frames ${first}–${last - 1}`],
    ["Completeness", `${Math.round(track.quality.completeness * 100)} %`],
  ];
}

// A video's frames (JPEG, the track's box drawn) paired with the silhouette extracted from each.
function showVideoFrames(preview, frames) {
  const list = $("video-frames");
  list.replaceChildren();
  const pairs = preview.video ? preview.video.frames : [];
  const shown = pairs.filter((f) => isJpeg(f.image) && frames[f.silhouette]);
  for (const item of shown) {
    const entry = document.createElement("li");
    entry.className = "video-frame";
    const picture = new Image();
    picture.className = "video-thumb";
    picture.alt = `Video frame ${item.frame}`;
    picture.src = item.image;
    const silhouette = new Image();
    silhouette.className = "gei video-silhouette";
    silhouette.alt = `Silhouette extracted from frame ${item.frame}`;
    silhouette.src = frames[item.silhouette].src;
    const caption = document.createElement("span");
    caption.className = "counter";
    caption.textContent = `frame ${item.frame}`;
    entry.append(picture, silhouette, caption);
    list.append(entry);
  }
  $("video-view").hidden = shown.length === 0;
}

// ----- animation

function drawFrame() {
  const canvas = $("animation");
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = false; // crisp pixels when scaled up
  context.drawImage(state.frames[state.index], 0, 0, canvas.width, canvas.height);
  $("frame-counter").textContent = `frame ${state.index + 1} / ${state.frames.length}`;
}

function play() {
  stopAnimation();
  drawFrame();
  state.timer = setInterval(() => {
    state.index = (state.index + 1) % state.frames.length;
    drawFrame();
  }, 1000 / FPS);
  setPlayButton(true);
}

function stopAnimation() {
  clearInterval(state.timer);
  state.timer = null;
  setPlayButton(false);
}

function setPlayButton(playing) {
  const button = $("play-pause");
  button.textContent = playing ? "Pause" : "Play";
  button.setAttribute("aria-pressed", String(playing));
}

// ----- search

async function search() {
  const gallery = $("gallery-select").value;
  const probe = state.probe;
  if (!probe || !gallery) return;
  const generation = state.generation;
  const form = new FormData();
  form.append("files", probe, probe.name);
  form.append("gallery", gallery);
  form.append("k", $("top-k").value || "5");
  const maxFar = decisionFar();
  if (maxFar) form.append("max_far", maxFar);
  const filter = searchFilter();
  if (filter) form.append("filter", JSON.stringify(filter));
  clearResults(`Searching ${gallery}…`);
  $("search-button").disabled = true;
  try {
    const found = await (await api("/search", { method: "POST", body: form })).json();
    if (generation === state.generation) renderResults(found);
  } catch (error) {
    if (generation !== state.generation) return;
    $("search-status").textContent = "";
    showError("search-error", error);
  } finally {
    updateSearchButton();
  }
}

function clearResults(status) {
  showError("search-error", null);
  $("results").replaceChildren();
  $("search-status").textContent = status;
  showAnswer("answer", null);
  showReview(null);
  showAnswer("verify-result", null);
  $("verify-form").hidden = true;
}

function showAnswer(id, text, yes) {
  const element = $(id);
  element.hidden = !text;
  element.textContent = text || "";
  element.className = `answer ${yes ? "yes" : "no"}`;
}

function renderResults(found) {
  const [probe] = found.data; // one probe per search from this page
  if (probe.error) {
    $("search-status").textContent = "";
    showError("search-error", probe.error);
    return;
  }
  const timing = `model ${probe.timings.inference_ms.toFixed(0)} ms`;
  const where = found.filter ? " among the sequences the filter keeps" : "";
  $("search-status").textContent =
    probe.count === 0
      ? `No subject of ${found.gallery} passes${where}.`
      : `Top ${probe.count} of ${found.gallery}${where}, best first (${timing}).`;
  if (found.max_far !== null) {
    const level = farLevel(found.max_far);
    if (probe.match) {
      const who = probe.match.subject_id;
      showAnswer("answer", `Match: ${who} (FAR at most ${level}; ${farWords(probe.match.far, who)}).`, true);
      showReview(probe.audit_id, UNREVIEWED);
    } else {
      showAnswer("answer", `No match: nobody in ${found.gallery} passes at FAR ${level}.`, false);
    }
  }
  const list = $("results");
  for (const hit of probe.data) list.append(matchCard(found.gallery, hit));
  $("verify-form").hidden = false;
}

// ----- reviews: a match is confirmed by two distinct keys (POST /audit/{id}/review; a full key)

const UNREVIEWED = { state: "pending", required: 2, confirmed_by: [], rejected_by: [] };

function showReview(auditId, review) {
  const box = $("review");
  box.hidden = auditId === null || auditId === undefined;
  showError("review-error", null);
  if (box.hidden) return;
  box.dataset.auditId = String(auditId);
  $("review-state").textContent = reviewWords(review);
  const open = review.state === "pending";
  $("review-confirm").disabled = !open;
  $("review-reject").disabled = !open;
}

function reviewWords(review) {
  if (review.state === "confirmed") {
    return `Review: confirmed by ${review.confirmed_by.length} people (${review.confirmed_by.join(", ")}).`;
  }
  if (review.state === "rejected") return `Review: rejected by ${review.rejected_by.join(", ")}.`;
  const done = review.confirmed_by.length;
  return (
    `Review: not confirmed (${done} of ${review.required} confirmations). ` +
    `${review.required} different people, each with their own API key, confirm a match before anyone acts on it.`
  );
}

async function sendReview(verdict) {
  const id = $("review").dataset.auditId;
  showError("review-error", null);
  try {
    const response = await api(`/audit/${encodeURIComponent(id)}/review`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ verdict }),
    });
    showReview(id, (await response.json()).review);
  } catch (error) {
    showError("review-error", error); // a read-only key: 403; the same key twice: 409 already_reviewed
  }
}

async function verify() {
  const gallery = $("gallery-select").value;
  const probe = state.probe;
  const subject = $("verify-subject").value.trim();
  if (!probe || !gallery || !subject) return;
  const form = new FormData();
  form.append("files", probe, probe.name);
  form.append("gallery", gallery);
  form.append("subject_id", subject);
  const maxFar = decisionFar();
  if (maxFar) form.append("max_far", maxFar);
  showAnswer("verify-result", `Comparing with ${subject}…`, true);
  try {
    const checked = await (await api("/verify", { method: "POST", body: form })).json();
    const words = farWords(checked.far, subject);
    const score = `score ${checked.score.toFixed(3)}; ${words}`;
    if (checked.match === null) showAnswer("verify-result", `${subject}: ${score}.`, true);
    else if (checked.match) showAnswer("verify-result", `Verified: this is ${subject} (${score}).`, true);
    else showAnswer("verify-result", `Not ${subject} at FAR ${farLevel(checked.max_far)} (${score}).`, false);
  } catch (error) {
    showAnswer("verify-result", `${error.code}: ${error.message}`, false);
  }
}

function matchCard(gallery, hit) {
  const item = document.createElement("li");
  item.className = "match";
  const picture = document.createElement("div");
  picture.className = "match-picture";
  const placeholder = document.createElement("span");
  placeholder.className = "placeholder";
  placeholder.textContent = "no preview";
  picture.append(placeholder);

  const subject = document.createElement("p");
  subject.className = "subject";
  subject.textContent = hit.subject_id;
  const score = document.createElement("p");
  score.className = "score";
  score.textContent = hit.score.toFixed(3);
  const bar = document.createElement("div");
  bar.className = "bar";
  bar.setAttribute("aria-hidden", "true");
  const fill = document.createElement("span");
  fill.style.width = `${Math.max(0, Math.min(1, hit.score)) * 100}%`;
  bar.append(fill);
  const far = document.createElement("p");
  far.className = "far";
  far.textContent = farWords(hit.far, hit.subject_id);
  const sequence = document.createElement("p");
  sequence.className = "sequence";
  const seen = [hit.attributes.camera, hit.attributes.site].filter(Boolean).join(", ");
  sequence.textContent = `sequence ${hit.sequence_id}${seen ? ` (${seen})` : ""}`;

  const text = document.createElement("div");
  text.className = "match-text";
  text.append(subject, score, bar, far, sequence);
  item.append(picture, text);
  showMatchGei(gallery, hit, picture, placeholder);
  return item;
}

async function showMatchGei(gallery, hit, picture, placeholder) {
  try {
    const stored = await (await api(`/galleries/${path(gallery, "sequences", hit.sequence_id)}`)).json();
    const uri = stored.gei_png;
    if (!isPng(uri)) return;
    const image = new Image();
    image.className = "gei match-gei";
    image.alt = `Gait energy image of ${hit.subject_id}'s matching sequence`;
    image.src = uri;
    placeholder.replaceWith(image);
  } catch {
    // the match stands without its picture (e.g. the sequence was removed meanwhile)
  }
}

// ----- start

document.addEventListener("DOMContentLoaded", () => {
  initKey();
  $("sequence-file").addEventListener("change", pickFile);
  $("demo-select").addEventListener("change", pickDemo);
  $("gallery-select").addEventListener("change", updateSearchButton);
  $("galleries-refresh").addEventListener("click", loadGalleries);
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  $("review-confirm").addEventListener("click", () => sendReview("confirm"));
  $("review-reject").addEventListener("click", () => sendReview("reject"));
  $("verify-form").addEventListener("submit", (event) => {
    event.preventDefault();
    verify();
  });
  $("play-pause").addEventListener("click", () => (state.timer ? stopAnimation() : play()));
  loadGalleries();
  loadDemos();
  loadModel();
});
