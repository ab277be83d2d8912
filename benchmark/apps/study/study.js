// The aft-bench user study page (HIVE "distinct" task, Kim et al. 2022; AFT paper appendix A.4).
// One case at a time: a click or the keys 1-4 answer and move on, Back / Next and the arrow keys move between
// cases. The state (participant, answers, position) is kept in localStorage under the study id after every
// change, so a reload loses nothing; the end view downloads the answers as JSON for `aft-bench study score`.
(function () {
  "use strict";

  const data = JSON.parse(document.getElementById("study-data").textContent);
  const cases = data.cases;
  const total = cases.length;
  const storageKey = "aft-bench-study/" + data.study_id;
  const $ = (id) => document.getElementById(id);
  const views = { start: $("start-view"), case: $("case-view"), end: $("end-view") };
  const storage = openStorage();
  let state = loadState();
  let view = "start";

  function emptyState() {
    return { participant: "", answers: {}, index: 0, started: null, downloaded: false };
  }

  function openStorage() {
    try {
      const probe = storageKey + "/probe";
      window.localStorage.setItem(probe, "1");
      window.localStorage.removeItem(probe);
      return window.localStorage;
    } catch (error) {
      $("storage-warning").hidden = false;
      return null;
    }
  }

  function loadState() {
    if (!storage) {
      return emptyState();
    }
    try {
      const saved = JSON.parse(storage.getItem(storageKey) || "null");
      if (saved && typeof saved.answers === "object" && typeof saved.participant === "string") {
        return Object.assign(emptyState(), saved);
      }
    } catch (error) {
      // an unreadable entry starts afresh
    }
    return emptyState();
  }

  function save() {
    if (storage) {
      storage.setItem(storageKey, JSON.stringify(state));
    }
  }

  function answeredCount() {
    return cases.filter((c) => state.answers[c.id] !== undefined).length;
  }

  function showView(name) {
    view = name;
    Object.keys(views).forEach((key) => { views[key].hidden = key !== name; });
    const answered = answeredCount();
    $("progress").value = answered;
    const where = name === "case" ? "Case " + (state.index + 1) + " of " + total + " \u00b7 " : "";
    $("progress-text").textContent = where + answered + " of " + total + " answered";
  }

  function buildChoices() {
    const group = $("choices");
    for (let position = 1; position <= 4; position += 1) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "choice";
      button.id = "choice-" + position;
      button.dataset.position = String(position);
      button.setAttribute("aria-pressed", "false");
      button.setAttribute("aria-keyshortcuts", String(position));
      const picture = document.createElement("img");
      picture.alt = "Explanation " + position + " of 4: a heat map over the image of the regions behind one class";
      const label = document.createElement("span");
      label.className = "key";
      label.textContent = String(position);
      button.append(picture, label);
      button.addEventListener("click", (event) => {
        if (event.detail <= 1) { // the second click of a double click would answer the next case
          choose(position);
        }
      });
      group.append(button);
    }
  }

  function showCase(index, focus) {
    state.index = Math.max(0, Math.min(index, total - 1));
    const current = cases[state.index];
    const chosen = state.answers[current.id];
    $("case-title").textContent = "Case " + (state.index + 1) + " of " + total;
    $("case-image").src = current.image;
    $("case-image").alt = "The image of case " + (state.index + 1);
    document.querySelectorAll(".choice").forEach((button, k) => {
      button.querySelector("img").src = current.maps[k];
      button.setAttribute("aria-pressed", String(chosen === k + 1));
    });
    $("back").disabled = state.index === 0;
    $("next").disabled = chosen === undefined;
    save();
    showView("case");
    if (focus) {
      $("choice-1").focus();
    }
  }

  function showEnd() {
    state.index = total;
    save();
    showView("end");
    $("end-summary").textContent = "You answered all " + total + " cases. Please download your answers and " +
      "send the file to the researcher.";
    $("new-participant").disabled = !state.downloaded;
    $("download").focus();
  }

  function advance(from) {
    if (from + 1 >= total) {
      showEnd();
    } else {
      showCase(from + 1, true);
    }
  }

  function choose(position) {
    $("restored").hidden = true;
    state.answers[cases[state.index].id] = position;
    advance(state.index);
  }

  function back() {
    if (view === "end") {
      showCase(total - 1, true);
    } else if (view === "case" && state.index > 0) {
      showCase(state.index - 1, true);
    }
  }

  function next() {
    if (view === "case" && state.answers[cases[state.index].id] !== undefined) {
      advance(state.index);
    }
  }

  function fileName() {
    const who = state.participant.replace(/[^A-Za-z0-9_-]+/g, "_") || "participant";
    return "answers-" + data.study_id + "-" + who + ".json";
  }

  function download() {
    const answers = {};
    cases.forEach((c) => { answers[c.id] = state.answers[c.id]; });
    const record = {
      format: data.format, version: 1, study_id: data.study_id, participant: state.participant,
      answers: answers, started: state.started, finished: new Date().toISOString(),
      user_agent: navigator.userAgent,
    };
    const blob = new Blob([JSON.stringify(record, null, 2) + "\n"], { type: "application/json" });
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = fileName();
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    state.downloaded = true;
    save();
    $("new-participant").disabled = false;
    $("download-note").textContent = "Saved as " + fileName() + " in your downloads folder.";
  }

  function newParticipant() {
    state = emptyState();
    if (storage) {
      storage.removeItem(storageKey);
    }
    $("participant").value = "";
    $("download-note").textContent = "";
    $("restored").hidden = true;
    showView("start");
    $("participant").focus();
  }

  function start(event) {
    event.preventDefault();
    const participant = $("participant").value.trim();
    const error = $("participant-error");
    error.hidden = participant !== "";
    $("participant").setAttribute("aria-invalid", String(participant === ""));
    if (participant === "") {
      $("participant").focus();
      return;
    }
    state.participant = participant;
    state.started = state.started || new Date().toISOString();
    resume();
  }

  function resume() {
    if (state.index >= total && answeredCount() === total) {
      showEnd();
    } else {
      showCase(Math.min(state.index, answeredCount()), true);
    }
  }

  function onKey(event) {
    if (view !== "case" || event.altKey || event.ctrlKey || event.metaKey) {
      return;
    }
    if (/^[1-4]$/.test(event.key)) {
      event.preventDefault();
      if (!event.repeat) { // a key held down answers one case, not the next ones too
        choose(Number(event.key));
      }
    } else if (event.key === "ArrowLeft") {
      event.preventDefault();
      back();
    } else if (event.key === "ArrowRight") {
      event.preventDefault();
      next();
    }
  }

  buildChoices();
  $("start-form").addEventListener("submit", start);
  $("back").addEventListener("click", back);
  $("next").addEventListener("click", next);
  $("download").addEventListener("click", download);
  $("review").addEventListener("click", back);
  $("new-participant").addEventListener("click", newParticipant);
  document.addEventListener("keydown", onKey);
  if (state.participant) {
    $("participant").value = state.participant;
    $("restored").textContent = "Welcome back, " + state.participant + ": your " + answeredCount() +
      " answers were restored.";
    $("restored").hidden = false;
    resume();
  } else {
    showView("start");
  }
}());
