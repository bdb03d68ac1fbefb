/* Chain of custody: scan-to-dispense page (keyboard-wedge and camera scanning, live checks) and
   use-by countdowns. No inline script (CSP); texts come from the page's data attributes. */
(function () {
  "use strict";

  function texts() {
    var node = document.getElementById("i18n-custody");
    return node ? node.dataset : {};
  }

  // ---- countdowns: <span class="countdown" data-use-by="ISO time">
  function tickCountdowns() {
    var t = texts();
    document.querySelectorAll(".countdown[data-use-by]").forEach(function (node) {
      var left = (new Date(node.dataset.useBy).getTime() - Date.now()) / 60000;
      if (isNaN(left)) { return; }
      if (left <= 0) {
        node.textContent = t.expired || "expired";
        node.classList.add("countdown-expired");
      } else {
        node.textContent = Math.floor(left) + " " + (t.minLeft || "min left");
        node.classList.toggle("countdown-soon", left < 15);
      }
    });
  }
  tickCountdowns();
  window.setInterval(tickCountdowns, 15000);

  // ---- scan page
  var input = document.getElementById("scan-input");
  if (!input) { return; }
  var section = document.getElementById("scan-section");
  var patientOut = document.getElementById("scanned-patient");
  var vialsOut = document.getElementById("scanned-vials");
  var result = document.getElementById("check-result");
  var formPatient = document.getElementById("form-patient");
  var formVials = document.getElementById("form-vials");
  var state = { patient: formPatient.value || "", vials: formVials.value ? formVials.value.split(/\s+/).filter(Boolean) : [] };

  function csrfToken() {
    var field = document.querySelector("#dispense-form input[name=csrf_token]");
    return field ? field.value : "";
  }

  function short(code) {
    var parts = code.split(".");
    return parts.length >= 3 ? parts[1] + " " + parts[2] : code.slice(0, 40);
  }

  function render() {
    patientOut.textContent = state.patient ? short(state.patient) : (texts().notScanned || "");
    vialsOut.textContent = "";
    state.vials.forEach(function (code) {
      var li = document.createElement("li");
      li.textContent = short(code);
      vialsOut.appendChild(li);
    });
    formPatient.value = state.patient;
    formVials.value = state.vials.join("\n");
  }

  function showChecks(body) {
    var t = texts();
    result.textContent = "";
    result.className = "check-result " + (body.ok ? "check-passed" : "check-failed");
    var heading = document.createElement("h2");
    heading.textContent = body.ok ? (t.allPassed || "All checks passed") : (t.failed || "Checks failed");
    result.appendChild(heading);
    if (body.ok && body.dose && body.dose.message) {
      var dose = document.createElement("p");
      dose.className = "dose-summary";
      dose.textContent = body.dose.message;
      result.appendChild(dose);
    }
    var list = document.createElement("ul");
    list.className = "checklist";
    (body.checks || []).forEach(function (check) {
      if (body.ok && check.passed && check.rule.indexOf("dose") === 0) { return; }
      var li = document.createElement("li");
      li.className = check.passed ? "check-pass" : "check-fail";
      li.dataset.rule = check.rule;
      li.textContent = (check.passed ? "\u2714 " : "\u2718 ") + check.message;
      list.appendChild(li);
    });
    result.appendChild(list);
  }

  function runCheck() {
    if (!state.patient || !state.vials.length) { return; }
    fetch(section.dataset.checkUrl, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(), "Accept": "application/json" },
      body: JSON.stringify({ patient: state.patient, vials: state.vials })
    }).then(function (response) {
      return response.json().then(function (body) { return { status: response.status, body: body }; });
    }).then(function (answer) {
      if (answer.status !== 200) {
        showChecks({ ok: false, checks: [{ rule: "request", passed: false, message: answer.body.message || texts().error }] });
      } else {
        showChecks(answer.body);
      }
    }).catch(function () {
      showChecks({ ok: false, checks: [{ rule: "request", passed: false, message: texts().error || "error" }] });
    });
  }

  function accept(code) {
    code = (code || "").trim();
    if (!code) { return; }
    if (code.indexOf("LS1.PATIENT.") === 0 || !state.patient) {
      state.patient = code;
    } else {
      state.vials.push(code);
    }
    render();
    runCheck();
  }

  // Enter takes the scanned code; Enter on an empty field, once the wristband and vials are in,
  // goes on to the signature (keyboard-only use without counting Tabs).
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter") {
      event.preventDefault();
      if (!input.value.trim() && state.patient && state.vials.length) {
        document.getElementById("sign_username").focus();
        return;
      }
      accept(input.value);
      input.value = "";
    }
  });
  // Keep the focus in the scan field unless the user is typing in the signature form.
  document.addEventListener("click", function (event) {
    if (!event.target.closest("form, a, button, input, textarea, select, label")) { input.focus(); }
  });
  document.getElementById("scan-reset").addEventListener("click", function () {
    state.patient = ""; state.vials = []; render(); result.textContent = ""; result.className = "check-result";
    input.focus();
  });

  // ---- camera decoding with the vendored jsQR (static/vendor/jsqr)
  var video = document.getElementById("camera-video");
  var canvas = document.getElementById("camera-canvas");
  var cameraButton = document.getElementById("camera-start");
  var last = "";
  function frame() {
    if (video.readyState === video.HAVE_ENOUGH_DATA) {
      canvas.width = video.videoWidth; canvas.height = video.videoHeight;
      var context = canvas.getContext("2d");
      context.drawImage(video, 0, 0, canvas.width, canvas.height);
      var image = context.getImageData(0, 0, canvas.width, canvas.height);
      var found = window.jsQR ? window.jsQR(image.data, image.width, image.height) : null;
      if (found && found.data && found.data !== last) { last = found.data; accept(found.data); }
    }
    if (!video.classList.contains("is-hidden")) { window.requestAnimationFrame(frame); }
  }
  cameraButton.addEventListener("click", function () {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || !window.jsQR) {
      cameraButton.textContent = texts().cameraOff || "Camera not available"; return;
    }
    navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } }).then(function (stream) {
      video.srcObject = stream; video.classList.remove("is-hidden"); video.play();
      window.requestAnimationFrame(frame);
    }).catch(function () { cameraButton.textContent = texts().cameraOff || "Camera not available"; });
  });

  render();
  if (state.patient && state.vials.length) { runCheck(); }
  // After a refused signature the cursor stays in the field to correct (static/js/app.js).
  if (!document.querySelector('main [aria-invalid="true"]')) { input.focus(); }
})();
