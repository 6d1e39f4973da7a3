// The llmkit chat page: plain JavaScript, no build step. Conversations live in localStorage.
"use strict";

const $ = (id) => document.getElementById(id);
const STORE = "llmkit.conversations";
const KEY = "llmkit.apiKey";
let conversations = JSON.parse(localStorage.getItem(STORE) || "[]");
let current = null;
let controller = null;

function save() { localStorage.setItem(STORE, JSON.stringify(conversations)); }
function headers() {
  const h = { "Content-Type": "application/json" };
  const key = localStorage.getItem(KEY);
  if (key) h.Authorization = "Bearer " + key;
  return h;
}
function showError(text) { $("error").textContent = text; $("error").hidden = !text; }

// ---- markdown: escape everything, then add a small safe subset (code, bold, italics, lists) ----
function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function inline(text) {
  return text
    .replace(/`([^`]+)`/g, "<code>$1</code>")
    .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|\W)\*([^*\n]+)\*/g, "$1<em>$2</em>");
}
function renderMarkdown(source) {
  const parts = escapeHtml(source).split(/```/);
  return parts.map((part, index) => {
    if (index % 2 === 1) {
      const body = part.replace(/^[\w+-]*\n/, "");
      return "<pre><code>" + body + "</code></pre>";
    }
    const blocks = part.split(/\n{2,}/).filter((b) => b.trim());
    return blocks.map((block) => {
      const lines = block.split("\n");
      if (lines.every((l) => /^\s*([-*]|\d+\.)\s+/.test(l))) {
        const tag = /^\s*\d+\./.test(lines[0]) ? "ol" : "ul";
        return `<${tag}>` + lines.map((l) => "<li>" + inline(l.replace(/^\s*([-*]|\d+\.)\s+/, "")) + "</li>").join("") + `</${tag}>`;
      }
      const heading = block.match(/^(#{1,4})\s+(.*)$/);
      if (heading && lines.length === 1) return `<h${heading[1].length + 2}>${inline(heading[2])}</h${heading[1].length + 2}>`;
      return "<p>" + inline(block).replace(/\n/g, "<br>") + "</p>";
    }).join("");
  }).join("");
}

// ---- settings kept per conversation: system prompt, temperature, max tokens ------------------
// Each field is kept as typed (a string; empty means the server's default).
const FIELDS = { system: "system", temperature: "temperature", "max-tokens": "maxTokens" };
const SAMPLING = [
  { id: "temperature", param: "temperature", label: "Temperature", whole: false },
  { id: "max-tokens", param: "max_tokens", label: "Max tokens", whole: true },
];
function showSettings(conversation) {
  for (const [id, field] of Object.entries(FIELDS)) $(id).value = (conversation && conversation[field]) || "";
}
function keepSettings(conversation) {
  for (const [id, field] of Object.entries(FIELDS)) conversation[field] = $(id).value;
}
// The request's sampling parameters, or an Error naming the first field out of range. The bounds are
// the inputs' min and max attributes, which are the server's, so what passes here the server accepts.
function sampling() {
  const params = {};
  for (const { id, param, label, whole } of SAMPLING) {
    const input = $(id);
    const text = input.value.trim();
    input.removeAttribute("aria-invalid");
    if (!text && !input.validity.badInput) continue;
    const value = Number(text);
    const min = input.min === "" ? -Infinity : Number(input.min);
    const max = input.max === "" ? Infinity : Number(input.max);
    if (!text || !Number.isFinite(value) || value < min || value > max || (whole && !Number.isInteger(value))) {
      input.setAttribute("aria-invalid", "true");
      $("settings").open = true;
      const kind = whole ? "a whole number" : "a number";
      return new Error(`${label} must be ${kind} from ${input.min} to ${input.max}, or empty for the default.`);
    }
    params[param] = value;
  }
  return params;
}
// Checks the settings before a request; on a bad value shows why and returns null.
function checkedSampling() {
  const params = sampling();
  if (!(params instanceof Error)) return params;
  showError(params.message);
  return null;
}

// ---- conversations --------------------------------------------------------------------------
function newConversation() {
  current = { id: Date.now().toString(36), title: "New chat", messages: [] };
  keepSettings(current);
  conversations.unshift(current);
  save();
  closeSidebar();
  render();
}
function select(id) {
  current = conversations.find((c) => c.id === id) || null;
  showSettings(current);
  closeSidebar();
  render();
}
// On a narrow screen the conversation list is a panel opened by the "Chats" button.
function openSidebar(open) {
  document.body.classList.toggle("sidebar-open", open);
  $("toggle-sidebar").setAttribute("aria-expanded", String(open));
}
function closeSidebar() { openSidebar(false); }
function remove(id) {
  conversations = conversations.filter((c) => c.id !== id);
  save();
  if (current && current.id === id) { current = conversations[0] || null; showSettings(current); }
  render();
}
function renderList() {
  const list = $("conversations");
  list.innerHTML = "";
  for (const c of conversations) {
    const item = document.createElement("li");
    item.className = current && c.id === current.id ? "active" : "";
    const title = document.createElement("span");
    title.textContent = c.title;
    const del = document.createElement("button");
    del.textContent = "×";
    del.title = "Delete";
    del.onclick = (e) => { e.stopPropagation(); remove(c.id); };
    item.append(title, del);
    item.onclick = () => select(c.id);
    list.append(item);
  }
}
function messageElement(message) {
  const div = document.createElement("div");
  div.className = "message " + message.role;
  div.innerHTML = `<div class="role">${message.role}</div><div class="content"></div><div class="stats"></div>`;
  fill(div, message);
  return div;
}
function fill(div, message) {
  div.querySelector(".content").innerHTML = renderMarkdown(message.content || "");
  div.querySelector(".stats").textContent = message.stats || "";
}
function render() {
  renderList();
  const box = $("messages");
  box.innerHTML = "";
  for (const m of current ? current.messages : []) box.append(messageElement(m));
  box.scrollTop = box.scrollHeight;
  const last = current && current.messages[current.messages.length - 1];
  $("regenerate").hidden = !(last && last.role === "assistant") || !!controller;
}

// ---- talking to the server --------------------------------------------------------------------
async function loadModels() {
  try {
    const response = await fetch("/v1/models", { headers: headers() });
    if (response.status === 401) { showError("This server needs an API key: press “API key”."); return; }
    const data = await response.json();
    $("model").innerHTML = data.data.map((m) => `<option>${escapeHtml(m.id)}</option>`).join("");
  } catch (error) { showError("Cannot reach the server: " + error.message); }
}

async function errorText(response) {
  try {
    const data = await response.json();
    return (data.error && (data.error.message || data.error)) || response.statusText;
  } catch { return response.status + " " + response.statusText; }
}

async function generate(params) {
  keepSettings(current);
  const system = current.system.trim();
  const messages = current.messages.map(({ role, content }) => ({ role, content }));
  if (system) messages.unshift({ role: "system", content: system });
  const answer = { role: "assistant", content: "" };
  current.messages.push(answer);
  const div = messageElement(answer);
  $("messages").append(div);
  controller = new AbortController();
  setBusy(true);
  showError("");
  const started = performance.now();
  let firstToken = null;
  let usage = null;
  let pieces = 0; // one streamed piece is about one token; used when a stop cuts off the usage figures
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), signal: controller.signal,
      body: JSON.stringify({ model: $("model").value, messages, ...params, stream: true, stream_options: { include_usage: true } }),
    });
    if (!response.ok) throw new Error(await errorText(response));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const events = buffer.split("\n\n");
      buffer = events.pop();
      for (const event of events) {
        const data = event.replace(/^data: /, "");
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) usage = chunk.usage;
        const piece = chunk.choices && chunk.choices[0] && chunk.choices[0].delta.content;
        if (piece) {
          if (firstToken === null) firstToken = performance.now();
          pieces += 1;
          answer.content += piece;
          fill(div, answer);
          $("messages").scrollTop = $("messages").scrollHeight;
        }
      }
    }
  } catch (error) {
    if (error.name !== "AbortError") showError(error.message);
    else answer.stopped = true;
  } finally {
    const finished = performance.now();
    if (firstToken !== null) {
      const tokens = usage ? usage.completion_tokens : pieces;
      const count = tokens + (tokens === 1 ? " token · " : " tokens · ");
      const rate = tokens > 1 && finished > firstToken ? ((tokens - 1) / ((finished - firstToken) / 1000)).toFixed(1) + " tok/s · " : "";
      answer.stats = count + rate + "first token " + Math.round(firstToken - started) + " ms" + (answer.stopped ? " · stopped" : "");
    } else if (answer.stopped) answer.stats = "stopped";
    fill(div, answer);
    controller = null;
    setBusy(false);
    save();
    render();
  }
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  $("regenerate").hidden = true;
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || controller) return;
  const params = checkedSampling();
  if (!params) return;
  if (!current) newConversation();
  if (!current.messages.length) current.title = text.slice(0, 40);
  current.messages.push({ role: "user", content: text });
  $("prompt").value = "";
  save();
  render();
  generate(params);
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("composer").requestSubmit(); }
});
$("stop").onclick = () => controller && controller.abort();
$("regenerate").onclick = () => {
  if (!current || controller) return;
  const params = checkedSampling();
  if (!params) return;
  if (current.messages[current.messages.length - 1].role === "assistant") current.messages.pop();
  render();
  generate(params);
};
$("new-chat").onclick = newConversation;
for (const id of Object.keys(FIELDS)) {
  $(id).addEventListener("change", () => {
    if (current) { keepSettings(current); save(); }
    const params = sampling();
    if (params instanceof Error) showError(params.message);
    else if (id !== "system") showError("");
  });
}
$("toggle-sidebar").onclick = () => openSidebar(!document.body.classList.contains("sidebar-open"));
$("api-key").onclick = () => {
  const key = prompt("API key for this server (kept in this browser only):", localStorage.getItem(KEY) || "");
  if (key !== null) { localStorage.setItem(KEY, key.trim()); showError(""); loadModels(); }
};

current = conversations[0] || null;
showSettings(current);
render();
loadModels();
