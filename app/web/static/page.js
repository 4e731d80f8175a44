// The catdog page: each dropped, picked or pasted photo is sent to POST /predict (a few at a time)
// and gets a card with its thumbnail, label, probability bar, pet flag and latency, or the API's error.
"use strict";

const CONCURRENCY = 4;
const MAX_RETRIES = 3;
const queue = [];
let running = 0;
let done = 0;
let total = 0;

const $ = (selector) => document.querySelector(selector);

function percent(p) {
  return `${(100 * p).toFixed(1)}%`;
}

async function showModel() {
  try {
    const response = await fetch("/metadata");
    if (!response.ok) throw new Error((await errorMessage(response)) || response.statusText);
    const meta = await response.json();
    $("#model").textContent = `Model ${meta.version} (${meta.architecture}), classes: ${meta.class_names.join(", ")}.`;
  } catch (error) {
    $("#model").textContent = `The model is not ready yet: ${error.message}`;
  }
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error) return typeof body.error === "string" ? body.error : body.error.message;
  } catch (_) { /* not JSON */ }
  return `${response.status} ${response.statusText}`;
}

function addCard(file) {
  const card = $("#card").content.firstElementChild.cloneNode(true);
  const name = file.name || "pasted image";
  card.querySelector(".name").textContent = name;
  const thumb = card.querySelector(".thumb");
  thumb.src = URL.createObjectURL(file);
  thumb.alt = `Photo ${name}`;
  card.setAttribute("aria-busy", "true");
  $("#results").prepend(card);
  return card;
}

function showAnswer(card, answer, roundTripMs) {
  const label = card.querySelector(".label");
  label.textContent = answer.label;
  label.classList.add(answer.label);
  card.querySelector(".confidence").textContent = percent(answer.confidence);
  const bar = card.querySelector(".bar");
  bar.querySelector(".fill").style.width = percent(answer.confidence);
  const parts = Object.entries(answer.probabilities).map(([name, p]) => `${name} ${percent(p)}`);
  bar.setAttribute("aria-label", `Probabilities: ${parts.join(", ")}`);
  bar.title = parts.join(", ");
  const flag = card.querySelector(".flag");
  if (answer.is_cat_or_dog === false) {
    flag.textContent = `Probably neither a cat nor a dog (pet score ${answer.pet_score.toFixed(3)})`;
    flag.hidden = false;
  } else if (answer.is_cat_or_dog === true) {
    flag.textContent = `A cat or a dog (pet score ${answer.pet_score.toFixed(3)})`;
    flag.classList.add("ok");
    flag.hidden = false;
  }
  card.querySelector(".latency").textContent =
    `${Math.round(answer.latency_ms)} ms on the server, ${Math.round(roundTripMs)} ms round trip`;
}

function showError(card, message) {
  card.querySelector(".answer").hidden = true;
  card.querySelector(".bar").hidden = true;
  const error = card.querySelector(".error");
  error.textContent = message;
  error.hidden = false;
}

async function classify(file, card) {
  const form = new FormData();
  form.append("file", file, file.name || "pasted.png");
  const started = performance.now();
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      response = await fetch("/predict", { method: "POST", body: form });
    } catch (error) {
      showError(card, `The service cannot be reached: ${error.message}`);
      return;
    }
    if (response.status === 503 && attempt < MAX_RETRIES) {
      const wait = Number(response.headers.get("Retry-After")) || 1;
      await new Promise((resolve) => setTimeout(resolve, wait * 1000));
      continue;
    }
    if (!response.ok) {
      showError(card, await errorMessage(response));
      return;
    }
    showAnswer(card, await response.json(), performance.now() - started);
    return;
  }
}

function updateStatus() {
  $("#status").textContent = done < total ? `Classifying… ${done} of ${total} done.` : `${total} photo${total === 1 ? "" : "s"} classified.`;
}

function pump() {
  while (running < CONCURRENCY && queue.length) {
    const [file, card] = queue.shift();
    running++;
    classify(file, card).finally(() => {
      running--;
      done++;
      card.removeAttribute("aria-busy");
      card.classList.add("done");
      updateStatus();
      pump();
    });
  }
}

function add(files) {
  const list = Array.from(files || []);
  if (!list.length) return;
  for (const file of list) queue.push([file, addCard(file)]);
  total += list.length;
  updateStatus();
  pump();
}

function setUp() {
  const drop = $("#drop");
  const input = $("#files");
  input.addEventListener("change", () => {
    add(input.files);
    input.value = "";
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    add(event.dataTransfer && event.dataTransfer.files);
  });
  // Dropping next to the zone should not navigate away to the photo.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  document.addEventListener("paste", (event) => {
    const items = Array.from((event.clipboardData && event.clipboardData.files) || []);
    if (items.length) {
      event.preventDefault();
      add(items);
    }
  });
  showModel();
}

setUp();
