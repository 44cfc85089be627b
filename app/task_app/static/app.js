// Fills the table of the queue's tasks from GET /api/tasks as soon as the page is there,
// then every few seconds, so retries and rate limits show without reloading. The page
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
    );
    return tr;
  });
  body.replaceChildren(...rows);
  document.getElementById("tasks-status").textContent =
    data.tasks.length + " task(s), updated " + new Date().toLocaleTimeString();
}

async function refresh() {
  const status = document.getElementById("tasks-status");
  try {
    const response = await fetch("/api/tasks", { headers: { Accept: "application/json" } });
    const data = await response.json();
    if (response.ok) {
      render(data);
    } else {
      status.textContent = data.error || "Cannot list the queue's tasks (" + response.status + ")";
    }
  } catch (error) {
    status.textContent = "Cannot reach task-app: " + error;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

document.addEventListener("DOMContentLoaded", refresh);
