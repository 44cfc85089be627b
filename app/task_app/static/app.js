// Fills the table of the queue's tasks from GET /api/tasks (each with its retry plan) and
// the dead letters from GET /api/dead-letters as soon as the page is there, then every few
// seconds, so retries, rate limits and tasks given up on show without reloading. The page
// itself never waits for Cloud Tasks. Text only (no innerHTML): task ids and
// statuses come from the API and are never interpreted as markup.
"use strict";

const REFRESH_MS = 3000;

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  return td;
}

function statusText(status) {
  if (!status) {
    return "";
  }
  return status.message ? status.name + " " + status.message : status.name;
}

const SVG = "http://www.w3.org/2000/svg";

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) {
    element.setAttribute(key, String(value));
  }
  return element;
}

// A task's remaining attempts at their times, from the next (blue) to the one after which
// it is given up (red), with the plan in words beside it.
function planCell(plan) {
  const td = document.createElement("td");
  td.className = "plan";
  if (!plan) {
    return td;
  }
  const text = document.createElement("span");
  text.className = "plan-text";
  const end = plan.given_up_at
    ? "given up at " + plan.given_up_at
    : "not given up before the task's retention";
  text.textContent =
    "attempt " + plan.attempt + " of " + (plan.of || "unlimited") + ", next at " +
    plan.next_at + ", " + end;
  const svg = svgElement("svg", {
    class: "timeline", width: 160, height: 14, viewBox: "0 0 160 14", role: "img",
    "aria-label": "remaining attempts",
  });
  svg.append(svgElement("line", { x1: 6, y1: 7, x2: 154, y2: 7 }));
  plan.timeline.forEach((point, index) => {
    const last = index === plan.timeline.length - 1 && plan.given_up_at;
    const circle = svgElement("circle", {
      cx: (6 + 148 * point.x).toFixed(1), cy: 7, r: 3,
      class: index === 0 ? "next" : last ? "last" : "later",
    });
    const title = svgElement("title", {});
    title.textContent = "attempt " + point.number + " at " + point.at;
    circle.append(title);
    svg.append(circle);
  });
  td.append(text, svg);
  return td;
}

// A button posting a form with the page's CSRF token (the schedule form's).
function actionForm(path, label, className) {
  const form = document.createElement("form");
  form.method = "post";
  form.action = path;
  const token = document.createElement("input");
  token.type = "hidden";
  token.name = "csrf_token";
  const pageToken = document.querySelector('input[name="csrf_token"]');
  token.value = pageToken ? pageToken.value : "";
  const button = document.createElement("button");
  button.type = "submit";
  button.className = className;
  button.textContent = label;
  form.append(token, button);
  return form;
}

function renderDeadLetters(data) {
  const body = document.querySelector("#dead-letters tbody");
  const rows = data.dead_letters.map((letter) => {
    const tr = document.createElement("tr");
    tr.dataset.id = letter.id;
    const why = cell(letter.last_error);
    if (letter.reason) {
      const reason = document.createElement("span");
      reason.className = "muted";
      reason.textContent = " (" + letter.reason + ")";
      why.append(reason);
    }
    const actions = document.createElement("td");
    actions.className = "actions";
    const base = "/dead-letters/" + encodeURIComponent(letter.id);
    actions.append(
      actionForm(base + "/replay", "Replay", "replay"),
      actionForm(base + "/discard", "Discard", "discard"),
    );
    tr.append(
      cell(letter.id),
      why,
      cell(letter.last_attempt || letter.parked_at),
      cell(letter.attempts),
      cell(letter.message !== null ? letter.message : letter.body_shown),
      actions,
    );
    return tr;
  });
  body.replaceChildren(...rows);
  document.getElementById("dead-letters-status").textContent =
    data.dead_letters.length + " dead letter(s)" + (data.more ? " (first page)" : "") +
    ": tasks given up on, kept until replayed or discarded; updated " +
    new Date().toLocaleTimeString();
}

function render(data) {
  const body = document.querySelector("#tasks tbody");
  const rows = data.tasks.map((task) => {
    const tr = document.createElement("tr");
    tr.append(
      cell(task.id),
      cell(task.schedule_time),
      cell(task.dispatch_count),
      cell(task.response_count),
      cell(statusText(task.last_response_status)),
      planCell(task.plan),
    );
    return tr;
  });
  body.replaceChildren(...rows);
  document.getElementById("tasks-status").textContent =
    data.tasks.length + " task(s), updated " + new Date().toLocaleTimeString();
}

async function load(url, onData, statusId, what) {
  const status = document.getElementById(statusId);
  try {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    const data = await response.json();
    if (response.ok) {
      onData(data);
    } else {
      status.textContent = data.error || "Cannot list " + what + " (" + response.status + ")";
    }
  } catch (error) {
    status.textContent = "Cannot reach task-app: " + error;
  }
}

async function refresh() {
  try {
    await load("/api/tasks", render, "tasks-status", "the queue's tasks");
    if (document.getElementById("dead-letters").dataset.enabled === "true") {
      await load("/api/dead-letters", renderDeadLetters, "dead-letters-status", "dead letters");
    }
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

document.addEventListener("DOMContentLoaded", refresh);
