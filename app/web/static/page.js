// The catdog page: each dropped, picked or pasted photo is sent to POST /predict (a few at a time)
// and gets a card, in the order the photos were given, with its thumbnail, answer, probability bar,
// pet flag and latency, or the API's error. A photo flagged as neither a cat nor a dog leads with that.
"use strict";

const CONCURRENCY = 4;
const MAX_RETRIES = 3;
const queue = [];
let running = 0;
let classified = 0;
let failed = 0;
let total = 0;

const $ = (selector) => document.querySelector(selector);

// One decimal, never 100% or 0%: the service answers within [0.000001, 0.999999], and a probability
// that rounds to 100.0% would still claim a certainty no answer has.
function percent(p) {
  if (p >= 0.999) return "> 99.9%";
  if (p <= 0.001) return "< 0.1%";
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
  // A file the browser cannot show gets a plain placeholder, not a broken-image icon.
  thumb.addEventListener("error", () => thumb.replaceWith(placeholder()), { once: true });
  thumb.src = URL.createObjectURL(file);
  thumb.alt = `Photo ${name}`;
  card.setAttribute("aria-busy", "true");
  $("#results").append(card);
  return card;
}

// Three decimals; a score under 0.001 reads "< 0.001" rather than a claimed zero.
function score(p) {
  return p < 0.001 ? "< 0.001" : p.toFixed(3);
}

function placeholder() {
  const box = document.createElement("div");
  box.className = "thumb placeholder";
  box.textContent = "no preview";
  return box;
}

function showAnswer(card, answer, roundTripMs) {
  const label = card.querySelector(".label");
  const neither = answer.is_cat_or_dog === false;
  const split = Object.entries(answer.probabilities).map(([name, p]) => `${name} ${percent(p)}`);
  if (neither) {
    // Leads with the flag; the cat/dog split is what the classifier would say if it were one.
    label.textContent = "Not a cat or dog";
    label.classList.add("neither");
    card.querySelector(".confidence").textContent = "";
    card.querySelector(".bar").hidden = true;
    const secondary = card.querySelector(".secondary");
    secondary.textContent = `If it were one of the two: ${answer.label} ${percent(answer.confidence)}`;
    secondary.title = split.join(", ");
    secondary.hidden = false;
  } else {
    label.textContent = answer.label;
    label.classList.add(answer.label);
    card.querySelector(".confidence").textContent = percent(answer.confidence);
    const bar = card.querySelector(".bar");
    bar.querySelector(".fill").style.width = `${(100 * answer.confidence).toFixed(1)}%`;
    bar.setAttribute("aria-label", `Probabilities: ${split.join(", ")}`);
    bar.title = split.join(", ");
  }
  const flag = card.querySelector(".flag");
  if (neither) {
    flag.textContent = `Pet score ${score(answer.pet_score)}: probably neither a cat nor a dog`;
    flag.hidden = false;
  } else if (answer.is_cat_or_dog === true) {
    flag.textContent = `A cat or a dog (pet score ${score(answer.pet_score)})`;
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
      return false;
    }
    if (response.status === 503 && attempt < MAX_RETRIES) {
      const wait = Number(response.headers.get("Retry-After")) || 1;
      await new Promise((resolve) => setTimeout(resolve, wait * 1000));
      continue;
    }
    if (!response.ok) {
      showError(card, await errorMessage(response));
      return false;
    }
    showAnswer(card, await response.json(), performance.now() - started);
    return true;
  }
}

function photos(count) {
  return `${count} photo${count === 1 ? "" : "s"}`;
}

function updateStatus() {
  const done = classified + failed;
  const failures = failed ? `, ${failed} could not be classified` : "";
  $("#status").textContent = done < total
    ? `Classifying… ${done} of ${total} done${failures}.`
    : `${photos(classified)} classified${failures}.`;
}

function pump() {
  while (running < CONCURRENCY && queue.length) {
    const [file, card] = queue.shift();
    running++;
    classify(file, card).then((ok) => {
      if (ok) classified++;
      else failed++;
    }).finally(() => {
      running--;
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
