// The wsplex browser console (SPEC §6): pick protocols, connect, talk, read the log.
//
// Plain JavaScript with no build step and nothing fetched from elsewhere: the
// page must work from a server with no network. Each page holds its own
// WebSocket, so several tabs are independent clients.
"use strict";

const $ = (id) => document.getElementById(id);
const ui = {
  host: $("host"), name: $("name"), protocol: $("protocol"), choices: $("protocol-choices"),
  connectForm: $("connect-form"), connect: $("connect"), disconnect: $("disconnect"),
  help: $("help"), clear: $("clear"), helpPanel: $("help-panel"), helpProtocols: $("help-protocols"),
  helpJs: $("help-js"), log: $("log"), sendForm: $("send-form"), message: $("message"),
  messageHint: $("message-hint"), shortcutsRow: $("shortcuts-row"), shortcuts: $("shortcuts"), state: $("state"), chosen: $("chosen"),
  compose: $("jsonsvc-compose"), jsFrom: $("js-from"), jsTo: $("js-to"), jsKey: $("js-key"),
  jsValue: $("js-value"), jsData: $("js-data"),
};

/** What each close code means, in words (RFC 6455 §7.4.1 and the IANA registry). */
const CLOSE_CODES = {
  1000: "normal closure",
  1001: "going away: the server is shutting down or restarting",
  1002: "protocol error: a frame broke the WebSocket rules",
  1003: "unsupported data: this protocol does not take that kind of message",
  1005: "no status: the other side closed without giving a code",
  1006: "connection lost: it dropped without a closing handshake (network failure, or the server stopped)",
  1007: "invalid data: a text message was not valid UTF-8",
  1008: "policy violation: the server closed this connection on purpose",
  1009: "message too big: larger than the server accepts",
  1010: "a required extension was not negotiated",
  1011: "server error: the server hit an unexpected problem (or a keepalive ping went unanswered)",
  1012: "service restart: the server is restarting, try again shortly",
  1013: "try again later: the server is overloaded",
  1014: "bad gateway",
  1015: "TLS handshake failed",
};

/**
 * The commands of each protocol (SPEC §3, §4), offered in Shortcuts; picking one puts it in
 * the Message box. A trailing space means it takes an argument.
 */
const SHORTCUTS = {
  chat: ["/who", "/rooms", "/help", "/join ", "/name "],
  command: ["help", "date", "time", "status", "status --json", "protocols", "protocols --json",
    "clients", "clients --json", "auth ", "kick ", "broadcast ", "killserver"],
};

const HINTS = {
  echo: "Everything you send comes back to every echo client, you included; the log shows the round trip time.",
  chat: "Type a line to talk to your room. Commands: /name NEW, /join ROOM, /who, /rooms, /help.",
  command: "One command per message, from the list (help, date, time, status, protocols, clients…); add --json for JSON.",
  JSONsvc: "Fill in the fields above to build a header and data (header>data), or type it yourself.",
};

const STATE_TEXT = { connecting: "connecting…", open: "connected (open)", closing: "closing…", closed: "closed" };
const MAX_LOG_LINES = 5000;

let table = [];          // the protocol table from /protocols: [{name, description, help}]
let socket = null;       // the current WebSocket, or null
let attempt = null;      // what we tried: {url, offer, opened, byUser}
let echoPending = [];    // echo messages sent and not yet back: [{text, at}]

// -- the protocol table and the picker -----------------------------------------

/** The protocol names in the Protocol field, in order, without repeats. */
function offeredProtocols() {
  const names = ui.protocol.value.split(/[\s,]+/).filter((name) => name !== "");
  return [...new Set(names)];
}

function setOffered(names) {
  ui.protocol.value = names.join(", ");
  syncChoices();
  if (!ui.helpPanel.hidden) renderHelp();
}

/** Tick the boxes and number them to match the text field (the field is the truth). */
function syncChoices() {
  const offered = offeredProtocols();
  for (const item of ui.choices.querySelectorAll("li")) {
    const position = offered.indexOf(item.dataset.name);
    item.querySelector("input").checked = position >= 0;
    item.querySelector(".order").textContent = position >= 0 ? String(position + 1) : "";
  }
}

function renderChoices() {
  ui.choices.replaceChildren(...table.map((entry, index) => {
    const box = Object.assign(document.createElement("input"), { type: "checkbox", id: `offer-${index}` });
    box.addEventListener("change", () => {
      const offered = offeredProtocols().filter((name) => name !== entry.name);
      setOffered(box.checked ? [...offered, entry.name] : offered);
    });
    const label = Object.assign(document.createElement("label"), { htmlFor: box.id, textContent: entry.name });
    const order = Object.assign(document.createElement("span"), { className: "order", title: "position in your offer" });
    const description = Object.assign(document.createElement("span"), { className: "description", textContent: entry.description });
    const item = document.createElement("li");
    item.dataset.name = entry.name;
    item.append(box, order, label, description);
    return item;
  }));
  syncChoices();
}

function renderHelp() {
  if (table.length === 0) {
    ui.helpProtocols.replaceChildren(element("p", "The protocol list could not be loaded from /protocols.", "error"));
  } else {
    ui.helpProtocols.replaceChildren(...table.map((entry) => {
      const section = element("section", "", "protocol-help");
      section.append(element("h3", entry.name), element("p", entry.description), element("pre", entry.help));
      return section;
    }));
  }
  const offer = offeredProtocols();
  const names = offer.length ? offer : table.slice(0, 1).map((entry) => entry.name);
  ui.helpJs.textContent = [
    `const ws = new WebSocket(${JSON.stringify(connectionUrl() || defaultHost())}, ${JSON.stringify(names)});`,
    `ws.onopen = () => { console.log("server chose", ws.protocol); ws.send("hello"); };`,
    `ws.onmessage = (event) => console.log(event.data);`,
    `ws.onclose = (event) => console.log("closed", event.code, event.reason);`,
  ].join("\n");
}

/** Load the protocol table; on failure the picker stays a plain text field. */
async function loadProtocols() {
  try {
    const response = await fetch("/protocols", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    table = (await response.json()).protocols;
  } catch (error) {
    notice(`Could not load the protocol list from /protocols (${error.message}); type protocol names yourself.`, "error");
    return;
  }
  renderChoices();
  renderHelp();
}

/** The names a server at ``url`` offers, from its /protocols, or null when it cannot be read. */
async function protocolsAt(url) {
  const http = new URL(url);
  http.protocol = http.protocol === "wss:" ? "https:" : "http:";
  http.pathname = "/protocols";
  http.search = "";
  try {
    const response = await fetch(http, { cache: "no-store" });
    return (await response.json()).protocols.map((entry) => entry.name);
  } catch {
    return null;
  }
}

// -- connecting ------------------------------------------------------------------

function defaultHost() {
  if (!location.host) return "ws://localhost:12352/";
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`;
}

/** The WebSocket URL from the Host and Name fields, or "" when the host is not a URL. */
function connectionUrl() {
  let host = ui.host.value.trim();
  if (!/^[a-z]+:\/\//i.test(host)) host = `ws://${host}`;
  let url;
  try {
    url = new URL(host);
  } catch {
    return "";
  }
  if (url.protocol === "http:") url.protocol = "ws:";
  if (url.protocol === "https:") url.protocol = "wss:";
  if (url.protocol !== "ws:" && url.protocol !== "wss:") return "";
  const name = ui.name.value.trim();
  if (name) url.searchParams.set("name", name);
  return url.toString();
}

function connect() {
  if (socket) {
    notice("Already connected: press Disconnect first.");
    return;
  }
  const url = connectionUrl();
  if (!url) {
    notice(`"${ui.host.value}" is not a WebSocket address: write it like ${defaultHost()}`, "error");
    return;
  }
  const offer = offeredProtocols();
  let ws;
  try {
    ws = new WebSocket(url, offer);
  } catch (error) {
    // The browser checks protocol names itself (RFC 6455 §4.1: tokens, no repeats).
    notice(`Cannot connect: ${error.message}`, "error");
    return;
  }
  ws.binaryType = "arraybuffer";
  socket = ws;
  attempt = { url, offer, opened: false, byUser: false, waiting: [] };
  const current = attempt;
  echoPending = [];
  setState("connecting");
  notice(`Connecting to ${url}, offering ${offer.length ? offer.join(", ") : "no protocol"}…`);
  ws.onopen = () => opened(ws, current);
  ws.onmessage = (event) => { if (ws === socket) received(event.data); };
  ws.onclose = (event) => closed(ws, current, event);
}

function disconnect() {
  if (!socket) return;
  attempt.byUser = true;
  setState("closing", socket.protocol);
  socket.close(1000, "closed by the user");
}

function opened(ws, current) {
  if (ws !== socket) return;
  current.opened = true;
  setState("open", ws.protocol);
  notice(`Connected: the server chose ${ws.protocol || "no protocol"}.`);
  useProtocol(ws.protocol);
  for (const text of current.waiting.splice(0)) transmit(text);
}

function closed(ws, current, event) {
  if (ws !== socket) return;
  socket = null;
  setState("closed");
  useProtocol("");
  if (current.waiting.length) notice(`Not sent, the connection never opened: ${current.waiting.join(" / ")}`, "error");
  if (!current.opened) {
    if (current.byUser) notice("Connection attempt cancelled.");
    else explainRefusal(current);
  } else if (current.byUser) {
    notice(`Disconnected (${describeClose(event)}).`);
  } else if (event.code === 1006) {
    notice(`The connection dropped: ${describeClose(event)}.`, "error");  // no close frame came
  } else {
    notice(`The server closed the connection: ${describeClose(event)}.`, "error");
  }
}

function describeClose(event) {
  const meaning = CLOSE_CODES[event.code]
    || (event.code >= 4000 ? "closed by the application" : event.code >= 3000 ? "closed by a library" : "unknown code");
  return `${event.code} ${meaning}${event.reason ? `, reason: "${event.reason}"` : ""}`;
}

/**
 * A handshake the server refused reaches the page only as close 1006 before
 * open, so ask the server's /protocols what went wrong.
 */
async function explainRefusal(current) {
  const names = await protocolsAt(current.url);
  const { url, offer } = current;
  if (names === null) {
    notice(`Could not connect to ${url}: no WebSocket server answered there. Is the host right and the server running?`, "error");
  } else if (offer.length === 0) {
    notice(`The server refused the connection: you offered no protocol. It speaks: ${names.join(", ")}.`, "error");
  } else if (!offer.some((name) => names.includes(name))) {
    notice(`The server refused the connection: it does not speak the protocol(s) you offered (${offer.join(", ")}). `
      + `It speaks: ${names.join(", ")}.`, "error");
  } else {
    notice(`The server refused the connection to ${url} although it speaks ${offer.filter((n) => names.includes(n)).join(", ")}: `
      + "it may be full, or not accept this page's origin.", "error");
  }
}

function setState(state, protocol = "") {
  ui.state.textContent = STATE_TEXT[state];
  ui.state.dataset.state = state;
  ui.chosen.textContent = protocol || "none";
  document.body.dataset.state = state;
  ui.connect.hidden = state !== "closed";
  ui.disconnect.hidden = state === "closed";
  document.title = protocol ? `wsplex console: ${protocol} (${state})` : "wsplex console";
}

/** Fit the message box to the protocol the server chose. */
function useProtocol(protocol) {
  // A <select>, not a <datalist>: the Message box stays a plain textbox for assistive tech.
  const shortcuts = SHORTCUTS[protocol] || [];
  ui.shortcuts.replaceChildren(element("option", "choose a command…"),
    ...shortcuts.map((value) => Object.assign(document.createElement("option"), { value, textContent: value.trim() })));
  ui.shortcutsRow.hidden = shortcuts.length === 0;
  ui.messageHint.textContent = protocol
    ? HINTS[protocol] || `Connected with ${protocol}: type a message and press Enter.`
    : "Connect first, then type and press Enter.";
  ui.compose.hidden = protocol !== "JSONsvc";
  if (protocol === "JSONsvc" && !ui.jsFrom.value) ui.jsFrom.value = ui.name.value.trim();
}

// -- messages --------------------------------------------------------------------

function send() {
  const text = ui.message.value;
  if (socket && socket.readyState === WebSocket.CONNECTING && text !== "") {
    attempt.waiting.push(text);  // typed before the handshake finished: send it on open
    ui.message.value = "";
    return;
  }
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    notice("Not connected: press Connect first.", "error");
    return;
  }
  if (text === "") return;
  transmit(text);
  ui.message.value = "";
}

function transmit(text) {
  socket.send(text);
  if (socket.protocol === "echo") {
    echoPending.push({ text, at: performance.now() });
    if (echoPending.length > 1000) echoPending.shift();
  }
  line("sent", document.createTextNode(text));
}

function received(data) {
  if (typeof data !== "string") {
    const bytes = new Uint8Array(data);
    const hex = Array.from(bytes.slice(0, 32), (b) => b.toString(16).padStart(2, "0")).join(" ");
    line("received", document.createTextNode(`binary, ${bytes.length} bytes: ${hex}${bytes.length > 32 ? " …" : ""}`), "binary");
    return;
  }
  const render = RENDERERS[socket ? socket.protocol : ""] || renderPlain;
  const [content, kind] = render(data);
  line("received", content, kind);
}

function renderPlain(text) {
  return [document.createTextNode(text), ""];
}

/** Chat (SPEC §3): "[name] text" is a message, "* " a notice, "! " an error. */
function renderChat(text) {
  if (text.startsWith("* ")) return [document.createTextNode(text), "chat-notice"];
  if (text.startsWith("! ")) return [document.createTextNode(text), "chat-error"];
  const match = /^\[([^\]]+)\] ([\s\S]*)$/.exec(text);
  if (!match) return renderPlain(text);
  const span = document.createElement("span");
  span.append(element("span", `[${match[1]}]`, "speaker"), ` ${match[2]}`);
  return [span, "chat-message"];
}

/** Echo (SPEC §2): our own message back shows the round trip time. */
function renderEcho(text) {
  const index = echoPending.findIndex((pending) => pending.text === text);
  if (index < 0) return renderPlain(text);
  const [{ at }] = echoPending.splice(index, 1);
  const span = document.createElement("span");
  span.append(text, element("span", `round trip ${(performance.now() - at).toFixed(1)} ms`, "rtt"));
  return [span, "echo-own"];
}

/** Command (SPEC §4): JSON replies are indented to be read. */
function renderCommand(text) {
  if (text.startsWith("{")) {
    try {
      return [document.createTextNode(JSON.stringify(JSON.parse(text), null, 2)), "json"];
    } catch { /* not JSON after all */ }
  }
  return [document.createTextNode(text), text.startsWith("error:") ? "command-error" : ""];
}

/** JSONsvc (SPEC §5): a JSON header, then optionally ">" and data. */
function renderJsonsvc(text) {
  const [header, data] = splitJsonsvc(text);
  if (header === null) return renderPlain(text);
  const span = document.createElement("span");
  span.append(element("span", JSON.stringify(header), "header"));
  if (data !== null) span.append(element("span", ">", "separator"), element("span", data, "data"));
  return [span, header.error ? "jsonsvc-error" : "jsonsvc"];
}

function splitJsonsvc(text) {
  for (let end = text.indexOf(">"); ; end = text.indexOf(">", end + 1)) {
    const headerText = end < 0 ? text : text.slice(0, end);
    try {
      const header = JSON.parse(headerText);
      if (header && typeof header === "object") return [header, end < 0 ? null : text.slice(end + 1)];
    } catch { /* the ">" was inside the header */ }
    if (end < 0) return [null, null];
  }
}

const RENDERERS = { chat: renderChat, echo: renderEcho, command: renderCommand, JSONsvc: renderJsonsvc };

/** Build the Message from the JSONsvc fields: {"from":..,"to":..,"put":..}>data. */
function composeJsonsvc() {
  const header = {};
  if (ui.jsFrom.value) header.from = ui.jsFrom.value;
  if (ui.jsTo.value) header.to = ui.jsTo.value;
  if (ui.jsKey.value) header[ui.jsKey.value] = ui.jsValue.value;
  ui.message.value = JSON.stringify(header) + (ui.jsData.value ? `>${ui.jsData.value}` : "");
}

// -- the log ---------------------------------------------------------------------

function element(tag, text, className = "") {
  const node = document.createElement(tag);
  node.textContent = text;
  if (className) node.className = className;
  return node;
}

function timestamp(now) {
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  return `${pad(now.getHours())}:${pad(now.getMinutes())}:${pad(now.getSeconds())}.${pad(now.getMilliseconds(), 3)}`;
}

/** One log line: time, direction (sent / received / notice), content; newest at the bottom. */
function line(direction, content, kind = "") {
  const atBottom = ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 40;
  const now = new Date();
  const row = document.createElement("div");
  row.className = `line ${direction}${kind ? ` ${kind}` : ""}`;
  row.dataset.direction = direction;
  const time = element("time", timestamp(now), "time");
  time.dateTime = now.toISOString();
  const text = document.createElement("span");
  text.className = "text";
  text.append(content);
  row.append(time, element("span", direction, "direction"), text);
  ui.log.append(row);
  while (ui.log.childElementCount > MAX_LOG_LINES) ui.log.firstElementChild.remove();
  if (atBottom) ui.log.scrollTop = ui.log.scrollHeight;
}

function notice(text, kind = "") {
  line("notice", document.createTextNode(text), kind);
}

// -- wiring ----------------------------------------------------------------------

function toggleHelp() {
  const show = ui.helpPanel.hidden;
  ui.helpPanel.hidden = !show;
  ui.help.setAttribute("aria-expanded", String(show));
  if (show) {
    renderHelp();
    ui.helpPanel.scrollIntoView({ block: "nearest" });
    if (table.length === 0) loadProtocols();  // the server may have been down at page load
  }
}

function start() {
  const params = new URLSearchParams(location.search);
  ui.host.value = params.get("host") || defaultHost();
  ui.name.value = params.get("name") || "";
  ui.protocol.value = params.get("protocol") || "";
  ui.connectForm.addEventListener("submit", (event) => { event.preventDefault(); connect(); });
  ui.sendForm.addEventListener("submit", (event) => { event.preventDefault(); send(); });
  ui.disconnect.addEventListener("click", disconnect);
  ui.help.addEventListener("click", toggleHelp);
  ui.clear.addEventListener("click", () => ui.log.replaceChildren());
  ui.protocol.addEventListener("input", syncChoices);
  ui.shortcuts.addEventListener("change", () => {
    if (ui.shortcuts.selectedIndex > 0) ui.message.value = ui.shortcuts.value;
    ui.shortcuts.selectedIndex = 0;
    ui.message.focus();
  });
  for (const field of [ui.protocol, ui.host, ui.name]) {
    field.addEventListener("input", () => { if (!ui.helpPanel.hidden) renderHelp(); });  // keep the JS example current
  }
  for (const field of [ui.jsFrom, ui.jsTo, ui.jsKey, ui.jsValue, ui.jsData]) field.addEventListener("input", composeJsonsvc);
  setState("closed");
  useProtocol("");
  notice("Choose one or more protocols, then press Connect. Help explains each protocol.");
  loadProtocols();
}

start();
