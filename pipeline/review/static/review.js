// kefu-qa review workbench: the few things pages do in the browser. No framework, nothing from a CDN.
"use strict";

function reviewer() {
  const box = document.getElementById("reviewer");
  const name = box ? box.value.trim() : "";
  if (!name) {
    if (box) { box.focus(); box.classList.add("missing"); }
    alert("请先在右上角输入复核人名字");
    return null;
  }
  return name;
}

function runParam() {
  return new URLSearchParams(location.search).get("run") || "0";
}

async function postJSON(url, body) {
  const response = await fetch(url + "?run=" + encodeURIComponent(runParam()), {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(data.detail || ("请求失败：" + response.status));
  }
  return data;
}

function setupReviewer() {
  const box = document.getElementById("reviewer");
  if (!box) return;
  box.value = localStorage.getItem("kefu-reviewer") || "";
  box.addEventListener("change", () => {
    localStorage.setItem("kefu-reviewer", box.value.trim());
    box.classList.remove("missing");
  });
}

function setupSortableTables() {
  document.querySelectorAll("table.sortable th").forEach((th, column) => {
    th.addEventListener("click", () => {
      const table = th.closest("table");
      const body = table.tBodies[0];
      const ascending = th.dataset.order !== "asc";
      table.querySelectorAll("th").forEach((h) => delete h.dataset.order);
      th.dataset.order = ascending ? "asc" : "desc";
      const index = Array.from(th.parentNode.children).indexOf(th);
      const key = (row) => {
        const text = row.children[index].textContent.trim().replace("%", "");
        const number = parseFloat(text);
        return Number.isNaN(number) ? text : number;
      };
      const rows = Array.from(body.rows).sort((a, b) => {
        const x = key(a), y = key(b);
        const order = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === "number" ? -1 : 1);
        return ascending ? order : -order;
      });
      rows.forEach((row) => body.appendChild(row));
    });
  });
}

function setupPager() {
  document.querySelectorAll("a.page-link").forEach((link) => {
    link.addEventListener("click", (event) => {
      event.preventDefault();
      const params = new URLSearchParams(location.search);
      params.set("offset", link.dataset.offset);
      location.search = params.toString();
    });
  });
}

// Each form posts its fields and the reviewer's name, then reloads the page to show the change.
function submitsAs(selector, url, body) {
  document.querySelectorAll(selector).forEach((form) => {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const who = reviewer();
      if (!who) return;
      try {
        await postJSON(url(form), body(form, who));
        location.reload();
      } catch (error) { alert(error.message); }
    });
  });
}

function setupDisputes() {
  submitsAs("form.dispute-form", () => "/api/disputes", (form, who) => ({
    transcript_id: form.dataset.transcript, criterion_id: form.dataset.criterion,
    reason: form.elements.reason.value, opened_by: who,
  }));
  submitsAs("form.resolve-form", (form) => "/api/disputes/" + form.dataset.dispute + "/resolve", (form, who) => ({
    final_score: parseInt(form.elements.final_score.value, 10), resolved_by: who, note: form.elements.note.value,
  }));
}

function setupQueue() {
  const panel = document.getElementById("labelling");
  if (!panel) return;
  const items = Array.from(panel.querySelectorAll(".label-criterion"));
  let active = 0;
  const focus = (i) => {
    active = Math.max(0, Math.min(items.length - 1, i));
    items.forEach((item, j) => item.classList.toggle("active", j === active));
    items[active].scrollIntoView({block: "nearest"});
  };
  const go = (delta) => {
    const position = parseInt(panel.dataset.position, 10) + delta;
    if (position < 0 || position >= parseInt(panel.dataset.count, 10)) return;
    const params = new URLSearchParams(location.search);
    params.set("i", String(position));
    location.search = params.toString();
  };
  const choose = async (item, button) => {
    const who = reviewer();
    if (!who) return;
    const saved = item.querySelector(".saved");
    try {
      await postJSON("/api/labels", {
        transcript_id: panel.dataset.transcript, criterion_id: item.dataset.criterion,
        score: parseInt(button.dataset.score, 10), rater_id: who,
      });
      item.querySelectorAll("button.level").forEach((b) => b.classList.toggle("chosen", b === button));
      item.classList.add("done");
      saved.textContent = "已保存 " + button.dataset.score + " 分";
      focus(items.indexOf(item) + 1);
    } catch (error) {
      saved.textContent = "保存失败：" + error.message;
    }
  };
  items.forEach((item, i) => {
    item.addEventListener("click", () => focus(i));
    item.querySelectorAll("button.level").forEach((button) => {
      button.addEventListener("click", (event) => { event.stopPropagation(); focus(i); choose(item, button); });
    });
  });
  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, select, textarea")) return;
    const digit = parseInt(event.key, 10);
    if (!Number.isNaN(digit) && digit >= 1) {
      const button = items[active].querySelectorAll("button.level")[digit - 1];
      if (button) { event.preventDefault(); choose(items[active], button); }
    } else if (event.key === "ArrowDown" || event.key === "j") { event.preventDefault(); focus(active + 1); }
    else if (event.key === "ArrowUp" || event.key === "k") { event.preventDefault(); focus(active - 1); }
    else if (event.key === "ArrowRight" || event.key === "n") { event.preventDefault(); go(1); }
    else if (event.key === "ArrowLeft" || event.key === "p") { event.preventDefault(); go(-1); }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupReviewer();
  setupSortableTables();
  setupPager();
  setupDisputes();
  setupQueue();
});
