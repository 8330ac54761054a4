// Eco² web page: sign in, upload a photo (presigned POST straight to the photo store), scan it, watch the
// stages and the streamed answer, see the reward, the collection and the chat. No libraries, no CDN.
"use strict";

// Each text in the page's two languages: [Korean, English].
const TEXT = {
  tagline: ["사진을 찍으면 분리배출 방법을 알려 드려요", "Take a photo, learn how to sort it"],
  signin: ["로그인", "Sign in"],
  token: ["토큰", "Token"],
  use_token: ["이 토큰 사용", "Use this token"],
  dev_token: ["개발용 토큰 받기", "Get a development token"],
  scan: ["사진으로 물어보기", "Ask with a photo"],
  drop: ["사진을 고르거나 여기로 끌어다 놓으세요", "Pick a photo or drop it here"],
  note: ["한마디 (선택)", "A note (optional)"],
  collection: ["내 캐릭터", "My characters"],
  chat: ["채팅", "Chat"],
  send: ["보내기", "Send"],
  signed_in: ["로그인됨:", "Signed in:"],
  need_token: ["먼저 로그인해 주세요", "Sign in first"],
  uploading: ["사진 올리는 중…", "Uploading the photo…"],
  no_reward: ["이번에는 캐릭터가 없어요", "No character this time"],
  empty: ["아직 모은 캐릭터가 없어요", "No characters yet"],
  queued: ["접수", "Queued"],
  vision: ["분류", "Vision"],
  rule: ["규칙", "Rule"],
  answer: ["답변", "Answer"],
  reward: ["보상", "Reward"],
  done: ["완료", "Done"],
  failed: ["실패", "Failed"],
  cancelled: ["취소", "Cancelled"],
  chat_unavailable: ["채팅을 쓸 수 없어요", "Chat is not available"],
};
const LANG = (navigator.language || "ko").toLowerCase().startsWith("ko") ? "ko" : "en";
const t = (key) => (TEXT[key] ? TEXT[key][LANG === "ko" ? 0 : 1] : key);
const $ = (id) => document.getElementById(id);
const STAGES = ["queued", "vision", "rule", "answer", "reward", "done"];
// The bearer token lives in sessionStorage: this tab only, gone when it closes, never shared with other tabs
// (the earned characters and chat session are not secrets and stay in localStorage). Drop any older copy.
localStorage.removeItem("eco2.token");
let token = sessionStorage.getItem("eco2.token") || "";
let chatSession = localStorage.getItem("eco2.functions.chat") || "";

function translate() {
  document.documentElement.lang = LANG;
  for (const el of document.querySelectorAll("[data-t]")) el.textContent = t(el.dataset.t);
}

function showError(message) { $("error").textContent = message || ""; }

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (token) headers.Authorization = "Bearer " + token;
  if (options.json !== undefined) headers["Content-Type"] = "application/json";
  const body = options.json !== undefined ? JSON.stringify(options.json) : options.body;
  const response = await fetch(path, { method: options.method || "GET", headers, body });
  if (!response.ok && response.status !== 202) {
    let detail = response.status + "";
    try { detail = (await response.json()).message || detail; } catch (_) { /* not JSON */ }
    const error = new Error(detail);
    error.status = response.status;
    throw error;
  }
  return response;
}

// Server-sent events over fetch (EventSource cannot send the Authorization header).
async function readEvents(path, onEvent) {
  const response = await api(path, { headers: { Accept: "text/event-stream" } });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer = (buffer + decoder.decode(value, { stream: true })).replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length && onEvent(name, JSON.parse(data.join("\n")))) {
        reader.cancel();
        return;
      }
    }
  }
}

function signedIn(user) {
  $("who").textContent = token ? `${t("signed_in")} ${user || ""}` : "";
  if (token) loadCollection();
}

async function devToken() {
  try {
    const body = await (await api("/app/dev-token", { method: "POST", json: {} })).json();
    token = body.token;
    sessionStorage.setItem("eco2.token", token);
    $("token").value = token;
    signedIn(body.user);
  } catch (error) { showError(error.message); }
}

function renderStages(current, status) {
  const list = $("stages");
  list.textContent = "";
  const reached = STAGES.indexOf(current);
  STAGES.forEach((stage, i) => {
    const li = document.createElement("li");
    li.textContent = t(stage);
    li.dataset.stage = stage;
    if (i <= reached) li.className = status === "failed" && i === reached ? "failed" : "done";
    list.appendChild(li);
  });
}

async function upload(file) {
  const grant = await (await api("/api/v1/images", {
    method: "POST", json: { content_type: file.type || "image/jpeg", size: file.size },
  })).json();
  const form = new FormData();
  for (const [name, value] of Object.entries(grant.upload.fields)) form.append(name, value);
  form.append("file", file);
  const stored = await fetch(grant.upload.url, { method: "POST", body: form });
  if (!stored.ok) throw new Error(`upload refused (${stored.status})`);
  return grant.image_url;
}

function onScanEvent(name, event) {
  if (name === "delta") {
    $("answer").textContent += event.data.delta;
    $("answer").dataset.deltas = String(Number($("answer").dataset.deltas || 0) + 1);
    return false;
  }
  renderStages(event.stage, event.status);
  $("bar").style.width = event.progress + "%";
  if (event.stage === "answer" && event.data && event.data.final_answer) {
    const final = event.data.final_answer;
    $("answer").textContent = final.user_answer;
    $("steps").textContent = "";
    for (const step of final.disposal_steps) {
      const li = document.createElement("li");
      li.textContent = step;
      $("steps").appendChild(li);
    }
  }
  if (event.stage === "reward") {
    const reward = event.data && event.data.reward;
    $("reward").textContent = reward ? event.message : `${t("no_reward")} — ${event.message}`;
    if (reward) remember(reward);
  }
  if (["done", "failed", "cancelled"].includes(event.status)) {
    if (event.status !== "done") showError(event.message);
    document.body.dataset.scan = event.status;
    loadCollection();
    return true;
  }
  return false;
}

async function scan(file) {
  if (!token) { showError(t("need_token")); return; }
  showError("");
  for (const id of ["answer", "reward", "steps"]) $(id).textContent = "";
  $("answer").dataset.deltas = "0";
  document.body.dataset.scan = "running";
  $("preview").src = URL.createObjectURL(file);
  $("preview").hidden = false;
  try {
    $("answer").textContent = t("uploading");
    const imageUrl = await upload(file);
    $("answer").textContent = "";
    const note = $("note").value.trim();
    const job = await (await api("/api/v1/scan", {
      method: "POST", json: note ? { image_url: imageUrl, user_input: note } : { image_url: imageUrl },
    })).json();
    renderStages("queued", "queued");
    await readEvents(job.stream_url, onScanEvent);
  } catch (error) {
    document.body.dataset.scan = "error";
    showError(error.message);
  }
}

// The collection: the server's (GET /api/v1/me/characters) together with what this page's scans earned. The
// server's copy is written by persist moments after a scan ends, so a reward just seen is shown until it is there.
// The page's own list belongs to the token it was earned with.
function earnedKey() { return "eco2.characters." + token.slice(-16); }

function remember(reward) {
  const mine = JSON.parse(localStorage.getItem(earnedKey()) || "{}");
  mine[reward.character_id] = reward;
  localStorage.setItem(earnedKey(), JSON.stringify(mine));
}

async function loadCollection() {
  const byId = JSON.parse(localStorage.getItem(earnedKey()) || "{}");
  // What this page knows is shown at once (a reward just earned among it), then the server's list beside it.
  renderCollection(byId);
  try {
    const body = await (await api("/api/v1/me/characters")).json();
    for (const c of body.characters || []) byId[c.character_id] = c;
  } catch (_) { /* not served by this gateway: what this page's scans earned */ }
  renderCollection(byId);
}

function renderCollection(byId) {
  const characters = Object.values(byId);
  const list = $("characters");
  list.textContent = "";
  if (!characters.length) list.textContent = t("empty");
  for (const c of characters) {
    const li = document.createElement("li");
    li.textContent = c.name || c.character_id;
    list.appendChild(li);
  }
}

function bubble(kind, text) {
  const div = document.createElement("div");
  div.className = "msg " + kind;
  div.textContent = text;
  $("messages").appendChild(div);
  $("messages").scrollTop = $("messages").scrollHeight;
  return div;
}

async function chat(message) {
  if (!token) { showError(t("need_token")); return; }
  bubble("me", message);
  const reply = bubble("bot", "");
  try {
    const body = chatSession ? { message, session_id: chatSession } : { message };
    const job = await (await api("/api/v1/chat", { method: "POST", json: body })).json();
    chatSession = job.session_id || chatSession;
    localStorage.setItem("eco2.functions.chat", chatSession);
    await readEvents(job.stream_url, (name, event) => {
      if (name === "delta") reply.textContent += event.data.delta;
      else if (event.status === "done" && event.data && event.data.answer) reply.textContent = event.data.answer;
      if (["done", "failed", "cancelled"].includes(event.status)) {
        reply.dataset.done = event.status;
        return true;
      }
      return false;
    });
  } catch (error) {
    reply.textContent = error.status === 404 ? t("chat_unavailable") : error.message;
    reply.dataset.done = "error";
  }
}

function wire() {
  translate();
  renderStages("", "");
  $("token").value = token;
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem("eco2.token", token);
    signedIn("");
  });
  $("dev-token").addEventListener("click", devToken);
  $("photo").addEventListener("change", () => { if ($("photo").files[0]) scan($("photo").files[0]); });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) scan(e.dataTransfer.files[0]);
  });
  $("chat-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const message = $("chat-input").value.trim();
    $("chat-input").value = "";
    if (message) chat(message);
  });
  signedIn("");
}

wire();
