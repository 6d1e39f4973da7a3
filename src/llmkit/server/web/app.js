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

// ---- conversations --------------------------------------------------------------------------
function newConversation() {
  current = { id: Date.now().toString(36), title: "New chat", system: $("system").value, messages: [] };
  conversations.unshift(current);
  save();
  render();
}
function select(id) {
  current = conversations.find((c) => c.id === id) || null;
  if (current) $("system").value = current.system || "";
  render();
}
function remove(id) {
  conversations = conversations.filter((c) => c.id !== id);
  save();
  if (current && current.id === id) current = conversations[0] || null;
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

async function generate() {
  const system = $("system").value.trim();
  current.system = system;
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
      body: JSON.stringify({ model: $("model").value, messages, stream: true, stream_options: { include_usage: true } }),
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
      const rate = tokens && finished > firstToken ? ((tokens - 1) / ((finished - firstToken) / 1000)).toFixed(1) + " tok/s · " : "";
      answer.stats = rate + "first token " + Math.round(firstToken - started) + " ms" + (answer.stopped ? " · stopped" : "");
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
  if (!current) newConversation();
  if (!current.messages.length) current.title = text.slice(0, 40);
  current.messages.push({ role: "user", content: text });
  $("prompt").value = "";
  save();
  render();
  generate();
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("composer").requestSubmit(); }
});
$("stop").onclick = () => controller && controller.abort();
$("regenerate").onclick = () => {
  if (!current || controller) return;
  if (current.messages[current.messages.length - 1].role === "assistant") current.messages.pop();
  render();
  generate();
};
$("new-chat").onclick = newConversation;
$("system").addEventListener("change", () => { if (current) { current.system = $("system").value; save(); } });
$("api-key").onclick = () => {
  const key = prompt("API key for this server (kept in this browser only):", localStorage.getItem(KEY) || "");
  if (key !== null) { localStorage.setItem(KEY, key.trim()); showError(""); loadModels(); }
};

current = conversations[0] || null;
if (current) $("system").value = current.system || "";
render();
loadModels();
