// mdmlab dashboard: listens to the event stream, swaps in the server-rendered sections that changed, and calls
// the control API for fault toggles and reset. No framework, no build step.
"use strict";

(function () {
  const REFRESH_DELAY_MS = 250;
  const MAX_EVENT_ROWS = 300;
  const pending = new Set();
  let timer = null;

  function notice(text, isError) {
    const box = document.getElementById("notice");
    box.textContent = text;
    box.classList.toggle("error", Boolean(isError));
    box.hidden = false;
    clearTimeout(notice.timer);
    notice.timer = setTimeout(() => { box.hidden = true; }, isError ? 12000 : 5000);
  }

  const csrfToken = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  async function api(method, path, body) {
    const options = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (method !== "GET") options.headers["X-MDMLab-CSRF"] = csrfToken;
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      const message = data && data.message ? data.message : `${method} ${path} answered ${response.status}`;
      throw new Error(message);
    }
    return data;
  }

  // -- sections ------------------------------------------------------------------------------------------------
  function schedule(...names) {
    names.forEach((n) => pending.add(n));
    if (!timer) timer = setTimeout(flush, REFRESH_DELAY_MS);
  }

  async function flush() {
    timer = null;
    const names = Array.from(pending);
    pending.clear();
    await Promise.all(names.map(refresh));
  }

  async function refresh(name) {
    const current = document.querySelector(`section[data-section="${name}"]`);
    if (!current) return;
    const response = await fetch(`/fragments/${name}`, { credentials: "same-origin" });
    if (!response.ok) return;
    const html = await response.text();
    const open = Array.from(current.querySelectorAll("details.step[open]")).map((d) => d.dataset.event);
    const inputs = Array.from(current.querySelectorAll(".fault [data-keep]")).map((el) => [
      el.closest(".fault").dataset.fault, el.dataset.keep, el.value]);
    const showConsole = document.getElementById("show-console");
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    const replacement = template.content.firstElementChild;
    current.replaceWith(replacement);
    inputs.forEach(([fault, keep, value]) => {
      const el = replacement.querySelector(`.fault[data-fault="${fault}"] [data-keep="${keep}"]`);
      if (el) el.value = value;
    });
    open.forEach((id) => {
      const details = replacement.querySelector(`details.step[data-event="${id}"]`);
      if (details) { details.open = true; loadDetail(details); }
    });
    if (name === "events" && showConsole) {
      document.getElementById("show-console").checked = showConsole.checked;
    }
    replacement.dispatchEvent(new CustomEvent("mdmlab:refreshed", { bubbles: true, detail: name }));
  }

  const AFFECTS = {
    console: [], faults: ["faults"], lab: ["timeline", "faults", "abm", "mdm", "devices", "dns"],
    dns: ["timeline"], device: ["timeline", "devices"],
  };

  function sectionsFor(event) {
    if (event.component === "console") {
      return event.path && event.path.startsWith("/api/dns") && event.method !== "GET" ? ["dns"] : [];
    }
    const names = [...(AFFECTS[event.component] || ["timeline", "abm", "mdm", "devices"])];
    // an armed fault's count moves when a request consumes it
    if (event.component !== "faults" && document.querySelector("#faults .fault.armed")) names.push("faults");
    return names;
  }

  // -- the event list --------------------------------------------------------------------------------------------
  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (className) {
      td.className = className;
      td.title = td.textContent;
    }
    row.appendChild(td);
  }

  const RCODES = { 0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED" };

  function statusText(e) {
    if (e.kind !== "dns") return e.status;
    if (e.status === null || e.status === undefined) return "no answer";
    return RCODES[e.status] || String(e.status);
  }

  function clock(ts) {
    const d = new Date(ts * 1000);
    const pad = (n, w) => String(n).padStart(w, "0");
    return `${pad(d.getHours(), 2)}:${pad(d.getMinutes(), 2)}:${pad(d.getSeconds(), 2)}.${pad(d.getMilliseconds(), 3)}`;
  }

  function isBad(e) {
    if (e.kind === "http") return e.status >= 400 && e.status !== 401;
    if (e.kind === "dns") return e.status !== 0;
    return false;
  }

  function addRow(e) {
    const body = document.getElementById("event-rows");
    if (!body || body.querySelector(`tr[data-event="${e.id}"]`)) return;
    const row = document.createElement("tr");
    row.className = `ev fresh component-${e.component}` + (isBad(e) ? " bad" : "");
    row.dataset.event = e.id;
    cell(row, e.id);
    cell(row, clock(e.ts));
    cell(row, e.component);
    cell(row, e.stage);
    cell(row, `${e.method || ""} ${e.host || ""}${e.path || ""}`, "clip");
    cell(row, statusText(e));
    cell(row, e.device, "clip");
    cell(row, e.summary, "clip wide");
    body.prepend(row);
    while (body.rows.length > MAX_EVENT_ROWS) body.deleteRow(body.rows.length - 1);
  }

  // -- the live stream -------------------------------------------------------------------------------------------
  function connect() {
    const live = document.getElementById("live");
    const after = document.body.dataset.lastEvent || "0";
    const source = new EventSource(`/api/events/stream?after=${encodeURIComponent(after)}`);
    source.onopen = () => { live.className = "live connected"; live.textContent = "live"; };
    source.onerror = () => { live.className = "live reconnecting"; live.textContent = "reconnecting…"; };
    source.onmessage = (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
      document.body.dataset.lastEvent = String(event.id);
      addRow(event);
      const names = sectionsFor(event);
      if (names.length) schedule(...names);
    };
    window.mdmlabStream = source;
  }

  // -- details, faults, reset --------------------------------------------------------------------------------------
  async function loadDetail(details) {
    const box = details.querySelector(".detail");
    if (!box || box.dataset.loaded) return;
    const response = await fetch(box.dataset.src, { credentials: "same-origin" });
    box.innerHTML = response.ok ? await response.text() : `<p class="bad">could not load (${response.status})</p>`;
    box.dataset.loaded = "1";
  }

  document.addEventListener("toggle", (e) => {
    const details = e.target;
    if (details.matches && details.matches("details.step") && details.open) loadDetail(details);
  }, true);

  document.addEventListener("change", async (e) => {
    const target = e.target;
    if (target.id === "show-console") {
      document.body.classList.toggle("hide-console", !target.checked);
      return;
    }
    if (!target.classList.contains("fault-toggle")) return;
    const card = target.closest(".fault");
    const name = target.dataset.fault;
    target.disabled = true;
    try {
      if (target.checked) {
        const body = { name };
        const host = card.querySelector(".fault-host");
        const times = card.querySelector(".fault-times");
        const seconds = card.querySelector(".fault-seconds");
        if (host && host.value) body.host = host.value;
        if (times && times.value) body.times = parseInt(times.value, 10);
        if (seconds && seconds.value) body.seconds = parseFloat(seconds.value);
        const result = await api("POST", "/api/faults", body);
        notice(`armed ${result.armed.name} on ${result.armed.host}`);
      } else {
        const result = await api("DELETE", `/api/faults/${encodeURIComponent(name)}`);
        notice(`cleared ${name} (${result.cleared})`);
      }
    } catch (err) {
      target.checked = !target.checked;
      notice(err.message, true);
    } finally {
      target.disabled = false;
      schedule("faults");
    }
  });

  document.addEventListener("click", async (e) => {
    if (e.target.id !== "reset") return;
    if (!window.confirm("Reset every mock to the scenario? Enrollments, tokens, ABM changes and armed faults are lost; the CA and the timeline stay.")) return;
    try {
      await api("POST", "/api/reset");
      notice("the lab is back to its scenario");
    } catch (err) {
      notice(err.message, true);
    }
    schedule("timeline", "faults", "abm", "mdm", "devices", "dns");
  });

  document.addEventListener("DOMContentLoaded", () => {
    document.body.classList.add("hide-console");
    connect();
  });
})();
