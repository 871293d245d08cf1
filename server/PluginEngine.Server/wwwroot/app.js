// The chat page of `pluginengine serve` (docs/serve.md#the-chat-page): plain browser JavaScript, no build step.
// It keeps the conversation here, sends it to /v1/chat/completions with stream: true, reads the server-sent events with
// fetch + a stream reader, and shows each answer's tokens/s from the usage chunk.
"use strict";

const $ = (id) => document.getElementById(id);
const conversation = $("conversation");
let messages = [];
let modelId = null;
let controller = null;

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

async function loadModel() {
  try {
    const response = await fetch("v1/models", { headers: headers() });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
    modelId = body.data[0].id;
    $("model").textContent = modelId;
  } catch (e) {
    $("model").textContent = "model unknown: " + e.message;
  }
}

function addTurn(role, text) {
  const div = document.createElement("div");
  div.className = "turn " + role;
  const content = document.createElement("span");
  content.className = "content";
  content.textContent = text;
  div.appendChild(content);
  conversation.appendChild(div);
  conversation.scrollTop = conversation.scrollHeight;
  return div;
}

// Reads "data: ..." events from the response body and calls onEvent with each parsed JSON payload (not [DONE]).
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        onEvent(JSON.parse(data));
      }
    }
  }
}

async function send(text) {
  messages.push({ role: "user", content: text });
  addTurn("user", text);
  const turn = addTurn("assistant", "");
  const content = turn.querySelector(".content");
  const system = $("system").value.trim();
  const body = {
    model: modelId || undefined,
    messages: system ? [{ role: "system", content: system }, ...messages] : messages,
    stream: true,
    stream_options: { include_usage: true },
    temperature: Number($("temperature").value),
    max_tokens: Number($("max-tokens").value),
  };
  controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  const started = performance.now();
  let firstToken = null, usage = null, finish = null;
  try {
    const response = await fetch("v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal });
    if (!response.ok) {
      const error = await response.json().catch(() => null);
      throw new Error(error && error.error ? error.error.message : response.status + " " + response.statusText);
    }
    await readEvents(response, (chunk) => {
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        if (choice.delta && choice.delta.content) {
          if (firstToken === null) firstToken = performance.now();
          content.textContent += choice.delta.content;
          conversation.scrollTop = conversation.scrollHeight;
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    });
    messages.push({ role: "assistant", content: content.textContent });
    const stats = document.createElement("span");
    stats.className = "stats";
    const seconds = (performance.now() - (firstToken ?? started)) / 1000;
    const tokens = usage ? usage.completion_tokens : null;
    stats.textContent = tokens === null
      ? `finish: ${finish}`
      : `${tokens} tokens, ${(tokens / Math.max(seconds, 1e-3)).toFixed(1)} tokens/s · prompt ${usage.prompt_tokens} tokens · finish: ${finish}`;
    turn.appendChild(stats);
    turn.dataset.done = "true";
  } catch (e) {
    if (content.textContent) messages.push({ role: "assistant", content: content.textContent });
    else messages.pop();
    turn.classList.add("error");
    const note = document.createElement("span");
    note.className = "stats";
    note.textContent = e.name === "AbortError" ? "stopped" : "error: " + e.message;
    turn.appendChild(note);
    turn.dataset.done = "error";
  } finally {
    controller = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("message").value;
  if (!text.trim() || controller) return;
  $("message").value = "";
  send(text);
});
$("message").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("reset").addEventListener("click", () => { messages = []; conversation.textContent = ""; });
$("api-key").addEventListener("change", loadModel);
loadModel();
