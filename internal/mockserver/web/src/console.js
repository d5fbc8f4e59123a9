// The mock server's web console: log in, watch the devices, open terminals
// to them over the management websocket as the Mender UI does, and move
// files with the file-transfer REST calls. No framework: a handful of DOM
// nodes per device and per tab.
import "@xterm/xterm/css/xterm.css";
import "./console.css";
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import { bodyText, decodeFrame, shellFrame, PROTO_SHELL, STATUS_ERROR, STATUS_NORMAL } from "./protomsg.js";

const API = {
  login: "/api/management/v1/useradm/auth/login",
  logout: "/api/management/v1/useradm/auth/logout",
  devices: "/api/management/v2/devauth/devices?page=1&per_page=500",
  device: (id) => "/api/management/v1/deviceconnect/devices/" + encodeURIComponent(id),
};

const POLL_MS = 2000;
// How long the page waits for the next shell ping when the device's ping
// names no timeout (docs/protocol.md §4.3). The wait is armed by the first ping,
// not at the start as in the Mender UI: tether's ping interval is
// configurable and may be longer than upstream's 60 s.
const HEALTH_MS = 65000;

const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") n.className = v;
    else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) n.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) n.append(c);
  return n;
}

async function errorText(resp) {
  const text = await resp.text();
  try {
    const j = JSON.parse(text);
    if (j && j.error) return j.error;
  } catch (_) {
    // not JSON: the text itself
  }
  return text.trim() || resp.status + " " + resp.statusText;
}

function basicAuth(email, password) {
  const bytes = new TextEncoder().encode(email + ":" + password);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return "Basic " + btoa(bin);
}

function ago(ts) {
  const s = Math.max(0, Math.round((Date.now() - ts) / 1000));
  if (s < 5) return "just now";
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return new Date(ts).toLocaleString();
}

function humanBytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1 << 20) return (n / 1024).toFixed(1) + " KiB";
  if (n < 1 << 30) return (n / (1 << 20)).toFixed(1) + " MiB";
  return (n / (1 << 30)).toFixed(2) + " GiB";
}

function shortID(id) {
  return id.length > 13 ? id.slice(0, 8) + "…" : id;
}

// Tab is one panel of the workspace: a terminal or a file panel.
class Tabs {
  constructor(bar, panels, empty) {
    this.bar = bar;
    this.panels = panels;
    this.empty = empty;
    this.tabs = [];
    this.active = null;
  }

  add(tab) {
    this.tabs.push(tab);
    this.bar.append(tab.tabEl);
    this.panels.append(tab.panelEl);
    this.empty.hidden = true;
    this.activate(tab);
  }

  activate(tab) {
    this.active = tab;
    for (const t of this.tabs) {
      const on = t === tab;
      t.tabEl.classList.toggle("active", on);
      t.panelEl.hidden = !on;
    }
    tab.shown();
  }

  remove(tab) {
    const i = this.tabs.indexOf(tab);
    if (i < 0) return;
    this.tabs.splice(i, 1);
    tab.tabEl.remove();
    tab.panelEl.remove();
    if (this.active === tab) {
      const next = this.tabs[Math.min(i, this.tabs.length - 1)];
      if (next) this.activate(next);
      else this.active = null;
    }
    this.empty.hidden = this.tabs.length > 0;
  }

  closeAll() {
    for (const t of [...this.tabs]) t.close();
  }
}

class BaseTab {
  constructor(app, title, kind) {
    this.app = app;
    this.n = ++app.tabCount;
    this.dot = el("span", { class: "dot" });
    this.tabEl = el(
      "div",
      { class: "tab " + kind, "data-tab": this.n, role: "tab", title },
      this.dot,
      el("span", { class: "tab-title" }, title),
      el("button", {
        class: "tab-close",
        title: "Close",
        "aria-label": "Close " + title,
        onclick: (ev) => {
          ev.stopPropagation();
          this.close();
        },
      }, "×"),
    );
    this.tabEl.addEventListener("click", () => app.tabs.activate(this));
    this.statusEl = el("span", { class: "status-text" });
    this.panelEl = el("section", { class: "panel " + kind, "data-tab": this.n, role: "tabpanel" });
  }

  setStatus(state, text) {
    this.state = state;
    this.dot.className = "dot " + state;
    this.statusEl.className = "status-text " + state;
    this.statusEl.textContent = text;
    this.statusEl.title = text;
  }

  shown() {}

  close() {
    this.app.tabs.remove(this);
  }
}

// TerminalTab is one shell session: one management websocket, one xterm.
class TerminalTab extends BaseTab {
  constructor(app, device) {
    super(app, shortID(device) + " · " + (app.terminalCount + 1), "terminal");
    app.terminalCount++;
    this.device = device;
    this.sid = "";
    this.started = false;
    this.ended = false;
    this.ws = null;
    this.health = null;

    this.termEl = el("div", { class: "term" });
    this.panelEl.append(
      el("div", { class: "statusbar" },
        el("span", { class: "device-id", title: device }, device),
        this.statusEl),
      this.termEl,
    );
    this.term = new Terminal({
      cursorBlink: true,
      fontFamily: '"DejaVu Sans Mono", "Liberation Mono", ui-monospace, monospace',
      fontSize: 14,
      lineHeight: 1.1,
      scrollback: 5000,
      theme: {
        background: "#0b0e14",
        foreground: "#d6dde6",
        cursor: "#7ee787",
        selectionBackground: "#264f78",
        black: "#1b1f27", red: "#f47067", green: "#7ee787", yellow: "#e3b341",
        blue: "#6cb6ff", magenta: "#dcbdfb", cyan: "#76e3ea", white: "#c9d1d9",
        brightBlack: "#636e7b", brightRed: "#ff938a", brightGreen: "#a6f0b0", brightYellow: "#f2cc60",
        brightBlue: "#96d0ff", brightMagenta: "#eedcff", brightCyan: "#b3f0ff", brightWhite: "#ffffff",
      },
    });
    this.fit = new FitAddon();
    this.term.loadAddon(this.fit);
    this.resizeObs = new ResizeObserver(() => this.refit());
  }

  open() {
    this.term.open(this.termEl);
    this.resizeObs.observe(this.termEl);
    this.refit();
    this.term.onData((s) => this.send("shell", {}, s));
    this.term.onBinary((s) => {
      const b = new Uint8Array(s.length);
      for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i) & 0xff;
      this.send("shell", {}, b);
    });
    this.term.onResize(({ cols, rows }) => {
      if (this.started) this.send("resize", { terminal_width: cols, terminal_height: rows });
    });
    this.connect();
  }

  shown() {
    this.refit();
    this.term.focus();
  }

  refit() {
    if (this.panelEl.hidden || !this.termEl.isConnected) return;
    try {
      this.fit.fit();
    } catch (_) {
      // not laid out yet; the next resize fits
    }
  }

  async connect() {
    this.setStatus("connecting", "Connecting to the device…");
    let status;
    try {
      const r = await fetch(API.device(this.device), { credentials: "same-origin" });
      if (r.status === 401) {
        this.end("error", "Not logged in: " + (await errorText(r)));
        this.app.loggedOut();
        return;
      }
      if (!r.ok) {
        this.end("error", "Cannot reach the device: " + (await errorText(r)));
        return;
      }
      status = (await r.json()).status;
    } catch (err) {
      this.end("error", "Cannot reach the server: " + err.message);
      return;
    }
    if (this.ended) return;
    if (status !== "connected") {
      this.end("error", "The device is not connected.");
      return;
    }
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(proto + "//" + location.host + API.device(this.device) + "/connect");
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      this.setStatus("connecting", "Connected to the server; starting a shell…");
      this.send("new", { terminal_width: this.term.cols, terminal_height: this.term.rows }, null, true);
    };
    ws.onmessage = (ev) => this.receive(ev.data);
    ws.onclose = (ev) => {
      if (this.ended) return;
      let why = "The connection closed";
      if (ev.code && ev.code !== 1005 && ev.code !== 1006) why += " (" + ev.code + (ev.reason ? ": " + ev.reason : "") + ")";
      else if (ev.reason) why += ": " + ev.reason;
      else if (!this.started) why = "The server refused the terminal connection";
      this.end("error", why + ".");
    };
  }

  send(typ, props, body, force) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || this.ended) return;
    if (!force && !this.started) return;
    this.ws.send(shellFrame(typ, this.sid, props, body));
  }

  receive(data) {
    let m;
    try {
      m = decodeFrame(data);
    } catch (err) {
      this.term.write("\r\n\x1b[31m[console] undecodable frame: " + err.message + "\x1b[0m\r\n");
      return;
    }
    if (m.proto !== PROTO_SHELL) return;
    const status = m.props.status;
    switch (m.typ) {
      case "new":
        if (status === STATUS_NORMAL) {
          this.sid = m.sid;
          this.started = true;
          this.setStatus("connected", "Connected: " + (bodyText(m.body) || "shell started"));
          // The size may have changed while the shell was starting.
          this.send("resize", { terminal_width: this.term.cols, terminal_height: this.term.rows });
          this.term.focus();
        } else {
          this.end("refused", "Refused by the device: " + (bodyText(m.body) || "no reason given"));
        }
        break;
      case "shell":
        if (status === STATUS_ERROR) {
          this.setStatus("warning", "Device: " + bodyText(m.body));
        } else {
          this.term.write(m.body);
        }
        break;
      case "ping": {
        this.send("pong", {});
        const secs = Number(m.props.timeout);
        this.armHealth(secs > 0 ? secs * 1000 : HEALTH_MS);
        break;
      }
      case "stop":
        if (status === STATUS_ERROR && m.body.length > 0) {
          this.end("ended", "Session ended: " + bodyText(m.body));
        } else {
          this.end("ended", "Session ended.");
        }
        break;
      default:
        break;
    }
  }

  armHealth(ms) {
    clearTimeout(this.health);
    this.health = setTimeout(() => {
      this.end("error", "Health check failed: no ping from the device for " + Math.round(ms / 1000) + " s.");
    }, ms);
  }

  // end marks the session over with why, and drops the websocket; the
  // terminal stays readable until the tab is closed.
  end(state, why) {
    if (this.ended) return;
    this.setStatus(state, why);
    this.ended = true;
    this.started = false;
    clearTimeout(this.health);
    this.term.options.cursorBlink = false;
    this.term.write("\r\n\x1b[2m[" + why + "]\x1b[0m\r\n");
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
  }

  close() {
    if (this.started && this.ws && this.ws.readyState === WebSocket.OPEN) {
      // Our own stop: the device ends the shell at once; the server's
      // "user disconnected" would say the same a moment later.
      this.send("stop", {});
    }
    this.end("ended", "Closed.");
    this.resizeObs.disconnect();
    this.term.dispose();
    this.app.terminals.delete(this.n);
    super.close();
  }

  text() {
    const buf = this.term.buffer.active;
    const lines = [];
    for (let i = 0; i < buf.length; i++) lines.push(buf.getLine(i).translateToString(true));
    while (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
    return lines.join("\n");
  }
}

// FilesTab moves files to and from one device with the file-transfer REST
// calls (docs/protocol.md §8.2).
class FilesTab extends BaseTab {
  constructor(app, device) {
    super(app, shortID(device) + " · files", "files");
    this.device = device;
    this.xhr = null;
    this.abort = null;

    this.dlPath = el("input", { type: "text", name: "download-path", placeholder: "/etc/os-release", spellcheck: "false" });
    this.dlButton = el("button", { class: "primary", type: "submit" }, "Download");
    this.dlProgress = el("progress", { max: 1, value: 0, hidden: true });
    this.dlResult = el("div", { class: "result" });
    const dlForm = el("form", { class: "card", onsubmit: (ev) => { ev.preventDefault(); this.download(); } },
      el("h3", {}, "Download from the device"),
      el("label", {}, "Path on the device", this.dlPath),
      el("div", { class: "row" }, this.dlButton, this.dlProgress),
      this.dlResult);

    this.upFile = el("input", { type: "file", name: "upload-file" });
    this.upPath = el("input", { type: "text", name: "upload-path", placeholder: "/tmp/file", spellcheck: "false" });
    this.upMode = el("input", { type: "text", name: "upload-mode", placeholder: "0644", spellcheck: "false", class: "narrow" });
    this.upButton = el("button", { class: "primary", type: "submit" }, "Upload");
    this.upProgress = el("progress", { max: 1, value: 0, hidden: true });
    this.upResult = el("div", { class: "result" });
    this.upFile.addEventListener("change", () => {
      const f = this.upFile.files[0];
      if (f && (!this.upPath.value || this.upPath.dataset.auto === "1")) {
        this.upPath.value = "/tmp/" + f.name;
        this.upPath.dataset.auto = "1";
      }
    });
    this.upPath.addEventListener("input", () => { this.upPath.dataset.auto = "0"; });
    const upForm = el("form", { class: "card", onsubmit: (ev) => { ev.preventDefault(); this.upload(); } },
      el("h3", {}, "Upload to the device"),
      el("label", {}, "File", this.upFile),
      el("label", {}, "Path on the device", this.upPath),
      el("label", {}, "Mode (octal, optional)", this.upMode),
      el("div", { class: "row" }, this.upButton, this.upProgress),
      this.upResult);

    this.panelEl.append(
      el("div", { class: "statusbar" },
        el("span", { class: "device-id", title: device }, device),
        this.statusEl),
      el("div", { class: "files-body" }, dlForm, upForm));
    this.setStatus("idle", "File transfer");
  }

  result(node, state, text) {
    node.className = "result " + state;
    node.textContent = text;
    this.setStatus(state === "ok" ? "connected" : state === "busy" ? "connecting" : "error", text);
  }

  async download() {
    const path = this.dlPath.value.trim();
    if (!path) {
      this.result(this.dlResult, "error", "Give the path of a file on the device.");
      return;
    }
    this.dlButton.disabled = true;
    this.dlProgress.hidden = false;
    this.dlProgress.removeAttribute("value");
    this.result(this.dlResult, "busy", "Downloading " + path + "…");
    const ctl = new AbortController();
    this.abort = ctl;
    try {
      const r = await fetch(API.device(this.device) + "/download?path=" + encodeURIComponent(path),
        { credentials: "same-origin", signal: ctl.signal });
      if (!r.ok) throw new Error(await errorText(r));
      const total = Number(r.headers.get("X-MEN-FILE-SIZE") || r.headers.get("Content-Length") || 0);
      const reader = r.body.getReader();
      const chunks = [];
      let got = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        got += value.length;
        if (total > 0) {
          this.dlProgress.max = total;
          this.dlProgress.value = got;
        }
        this.dlResult.textContent = "Downloading " + path + ": " + humanBytes(got) + (total > 0 ? " of " + humanBytes(total) : "");
      }
      const blob = new Blob(chunks, { type: "application/octet-stream" });
      const a = el("a", { href: URL.createObjectURL(blob), download: path.split("/").pop() || "download" });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 60000);
      const mode = r.headers.get("X-MEN-FILE-MODE");
      this.result(this.dlResult, "ok", "Downloaded " + path + " (" + humanBytes(got) + (mode ? ", mode " + mode : "") + ").");
    } catch (err) {
      if (err.name === "AbortError") return;
      this.result(this.dlResult, "error", "Download of " + path + " failed: " + err.message);
    } finally {
      this.dlButton.disabled = false;
      this.dlProgress.hidden = true;
    }
  }

  upload() {
    const f = this.upFile.files[0];
    const path = this.upPath.value.trim();
    const mode = this.upMode.value.trim();
    if (!f || !path) {
      this.result(this.upResult, "error", "Pick a file and give its path on the device.");
      return;
    }
    if (mode && !/^[0-7]{3,4}$/.test(mode)) {
      this.result(this.upResult, "error", "The mode is octal, like 0644.");
      return;
    }
    const form = new FormData();
    form.append("path", path);
    if (mode) form.append("mode", mode);
    form.append("file", f, f.name);
    const xhr = new XMLHttpRequest();
    this.xhr = xhr;
    xhr.open("PUT", API.device(this.device) + "/upload");
    xhr.withCredentials = true;
    xhr.upload.onprogress = (ev) => {
      if (!ev.lengthComputable) return;
      this.upProgress.max = ev.total;
      this.upProgress.value = ev.loaded;
      this.upResult.textContent = "Uploading " + f.name + ": " + humanBytes(ev.loaded) + " of " + humanBytes(ev.total);
    };
    const done = () => {
      this.upButton.disabled = false;
      this.upProgress.hidden = true;
      this.xhr = null;
    };
    xhr.onload = () => {
      done();
      if (xhr.status >= 200 && xhr.status < 300) {
        this.result(this.upResult, "ok", "Uploaded " + f.name + " to " + path + " (" + humanBytes(f.size) + ").");
        return;
      }
      let why = xhr.responseText.trim() || String(xhr.status);
      try {
        const j = JSON.parse(xhr.responseText);
        if (j && j.error) why = j.error;
      } catch (_) {
        // plain text answer
      }
      this.result(this.upResult, "error", "Upload to " + path + " failed: " + why);
    };
    xhr.onerror = () => {
      done();
      this.result(this.upResult, "error", "Upload to " + path + " failed: the connection broke.");
    };
    this.upButton.disabled = true;
    this.upProgress.hidden = false;
    this.upProgress.value = 0;
    this.result(this.upResult, "busy", "Uploading " + f.name + "…");
    xhr.send(form);
  }

  close() {
    if (this.abort) this.abort.abort();
    if (this.xhr) this.xhr.abort();
    super.close();
  }
}

class App {
  constructor() {
    this.tabCount = 0;
    this.terminalCount = 0;
    this.terminals = new Map();
    this.rows = new Map();
    this.timer = null;
    this.tabs = new Tabs($("#tabs"), $("#panels"), $("#empty"));
    this.loginForm = $("#login");
    this.loginError = $("#login-error");
    this.loginForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.login();
    });
    $("#logout").addEventListener("click", () => this.logout());
  }

  async start() {
    const ok = await this.refresh();
    if (ok) this.loggedIn();
    else this.loggedOut();
  }

  async login() {
    const email = $("#email").value.trim();
    const password = $("#password").value;
    this.loginError.textContent = "";
    const button = $("#login button");
    button.disabled = true;
    try {
      const r = await fetch(API.login, {
        method: "POST",
        credentials: "same-origin",
        headers: { Authorization: basicAuth(email, password) },
      });
      if (!r.ok) {
        this.loginError.textContent = "Login failed: " + (await errorText(r));
        return;
      }
      localStorage.setItem("tether.email", email);
      if (await this.refresh()) this.loggedIn();
      else this.loginError.textContent = "Logged in, but the server did not accept the session cookie.";
    } catch (err) {
      this.loginError.textContent = "Login failed: " + err.message;
    } finally {
      button.disabled = false;
    }
  }

  async logout() {
    this.tabs.closeAll();
    try {
      await fetch(API.logout, { method: "POST", credentials: "same-origin" });
    } catch (_) {
      // the cookie may stay; the login form is shown all the same
    }
    this.loggedOut();
  }

  loggedIn() {
    document.body.dataset.state = "app";
    $("#whoami").textContent = localStorage.getItem("tether.email") || "";
    clearInterval(this.timer);
    this.timer = setInterval(() => this.refresh(), POLL_MS);
  }

  loggedOut() {
    clearInterval(this.timer);
    this.timer = null;
    document.body.dataset.state = "login";
    $("#password").focus();
  }

  // refresh reloads the device list; false when not logged in.
  async refresh() {
    let list;
    try {
      const r = await fetch(API.devices, { credentials: "same-origin" });
      if (r.status === 401) {
        if (this.timer) this.loggedOut();
        return false;
      }
      if (!r.ok) throw new Error(await errorText(r));
      list = await r.json();
    } catch (err) {
      $("#devices-note").textContent = "Cannot list devices: " + err.message;
      return this.timer !== null;
    }
    const states = await Promise.all(list.map(async (d) => {
      try {
        const r = await fetch(API.device(d.id), { credentials: "same-origin" });
        return r.ok ? await r.json() : null;
      } catch (_) {
        return null;
      }
    }));
    this.render(list, states);
    return true;
  }

  render(list, states) {
    const box = $("#device-list");
    const seen = new Set();
    list.forEach((d, i) => {
      seen.add(d.id);
      let row = this.rows.get(d.id);
      if (!row) {
        row = this.deviceRow(d.id);
        this.rows.set(d.id, row);
      }
      box.append(row.el); // keeps the server's order
      const st = states[i];
      const connected = st && st.status === "connected";
      row.el.dataset.status = connected ? "connected" : "disconnected";
      row.status.textContent = connected ? "connected" : "disconnected";
      row.dot.className = "dot " + (connected ? "connected" : "idle");
      const ts = Date.parse((st && st.updated_ts) || d.updated_ts);
      row.seen.textContent = connected ? "online now" : "last seen " + (isNaN(ts) ? "never" : ago(ts));
      row.seen.title = isNaN(ts) ? "" : new Date(ts).toLocaleString();
      row.launch.disabled = !connected;
      const ident = d.identity_data ? Object.entries(d.identity_data).map(([k, v]) => k + "=" + v).join(", ") : "";
      row.ident.textContent = ident;
      row.ident.hidden = ident === "";
    });
    for (const [id, row] of this.rows) {
      if (!seen.has(id)) {
        row.el.remove();
        this.rows.delete(id);
      }
    }
    $("#devices-note").textContent = list.length === 0 ? "No device has connected yet." : "";
  }

  deviceRow(id) {
    const row = {};
    row.dot = el("span", { class: "dot" });
    row.status = el("span", { class: "device-status" });
    row.seen = el("span", { class: "device-seen" });
    row.ident = el("div", { class: "device-ident" });
    row.launch = el("button", { class: "primary launch", onclick: () => this.openTerminal(id) }, "Launch a new terminal");
    row.files = el("button", { class: "files", onclick: () => this.openFiles(id) }, "Files");
    row.el = el("div", { class: "device", "data-device": id },
      el("div", { class: "device-id", title: id }, id),
      row.ident,
      el("div", { class: "device-line" }, row.dot, row.status, row.seen),
      el("div", { class: "device-actions" }, row.launch, row.files));
    return row;
  }

  openTerminal(id) {
    const tab = new TerminalTab(this, id);
    this.terminals.set(tab.n, tab);
    this.tabs.add(tab);
    tab.open();
    return tab.n;
  }

  openFiles(id) {
    const tab = new FilesTab(this, id);
    this.tabs.add(tab);
    return tab.n;
  }
}

const app = new App();
// A small window onto the page for people in the devtools and for the
// browser tests: the text of a terminal's buffer and its size.
window.tetherConsole = {
  terminals: () => [...app.terminals.keys()],
  text: (n) => app.terminals.get(n)?.text() ?? null,
  size: (n) => {
    const t = app.terminals.get(n);
    return t ? { cols: t.term.cols, rows: t.term.rows } : null;
  },
  status: (n) => {
    const t = app.tabs.tabs.find((x) => x.n === n);
    return t ? { state: t.state, text: t.statusEl.textContent } : null;
  },
};
app.start();
