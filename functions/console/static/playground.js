/* darkroom playground: vanilla JS, no build step, no third-party code.
 *
 * The API key never leaves this page except in the Authorization header of requests to this origin's
 * API (never in a URL); it is kept in sessionStorage only when the person ticks "keep for this tab".
 * Everything the API returns is shown with textContent or as image data, never parsed as HTML.
 */
(function () {
  "use strict";

  var path = window.location.pathname;
  // http://127.0.0.1:3000/playground -> http://127.0.0.1:3000/v1; https://host/prod/playground -> https://host/prod/v1
  var API = window.location.origin + path.slice(0, path.lastIndexOf("/playground")) + "/v1";
  var STORAGE_KEY = "darkroom.playground.key";
  var MIME = { png: "image/png", jpeg: "image/jpeg", webp: "image/webp" };

  function $(id) {
    return document.getElementById(id);
  }

  function setStatus(id, text, kind) {
    var element = $(id);
    element.textContent = text;
    element.className = "status" + (kind ? " " + kind : "");
  }

  function clear(element) {
    while (element.firstChild) {
      element.removeChild(element.firstChild);
    }
  }

  // -- the key ----------------------------------------------------------------------------------------

  function apiKey() {
    return $("api-key").value.trim();
  }

  function rememberKey() {
    try {
      if ($("remember-key").checked && apiKey()) {
        window.sessionStorage.setItem(STORAGE_KEY, apiKey());
      } else {
        window.sessionStorage.removeItem(STORAGE_KEY);
      }
    } catch (ignored) {
      // storage disabled: the key simply is not kept
    }
  }

  // -- calling the API --------------------------------------------------------------------------------

  function ApiFailure(message, status, error) {
    this.message = message;
    this.status = status || 0;
    this.error = error || null;
  }

  /** fetch API + path with the key; resolves {data, response}, rejects with an ApiFailure. */
  function call(method, apiPath, body) {
    var key = apiKey();
    if (!key) {
      return Promise.reject(new ApiFailure("Paste an API key first."));
    }
    var headers = { Authorization: "Bearer " + key, Accept: "application/json" };
    var payload;
    if (body instanceof FormData) {
      payload = body; // the browser sets the multipart boundary
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    return window
      .fetch(API + apiPath, {
        method: method, headers: headers, body: payload, cache: "no-store", credentials: "omit",
        referrerPolicy: "no-referrer",
      })
      .catch(function (error) {
        throw new ApiFailure("Could not reach the API (" + error.message + ").");
      })
      .then(function (response) {
        showLimits(response, method + " /v1" + apiPath);
        return response.text().then(function (text) {
          var data = null;
          try {
            data = text ? JSON.parse(text) : null;
          } catch (ignored) {
            data = null;
          }
          if (!response.ok) {
            var error = data && data.error && typeof data.error === "object" ? data.error : null;
            var message = error && error.message ? String(error.message) : "HTTP " + response.status;
            throw new ApiFailure(message, response.status, error);
          }
          return { data: data, response: response };
        });
      });
  }

  function describe(failure) {
    if (!(failure instanceof ApiFailure)) {
      return "Unexpected error: " + (failure && failure.message ? failure.message : String(failure));
    }
    if (!failure.status) {
      return failure.message;
    }
    var code = failure.error && failure.error.code ? " " + failure.error.code : "";
    var param = failure.error && failure.error.param ? " (" + failure.error.param + ")" : "";
    return "Error " + failure.status + code + param + ": " + failure.message;
  }

  function busy(button, on) {
    $(button).disabled = on;
  }

  // -- limits ------------------------------------------------------------------------------------------

  function showLimits(response, label) {
    var seen = false;
    ["requests", "images"].forEach(function (name) {
      ["limit", "remaining", "reset"].forEach(function (part) {
        var value = response.headers.get("x-ratelimit-" + part + "-" + name);
        if (value !== null) {
          $("limit-" + part + "-" + name).textContent = value;
          seen = true;
        }
      });
    });
    if (seen) {
      var request = response.headers.get("x-request-id");
      $("limits-source").textContent =
        "After " + label + (request ? " (request " + request + ")" : "") + " at " + new Date().toLocaleTimeString() + ".";
    }
  }

  // -- models ------------------------------------------------------------------------------------------

  function fillModels(models) {
    var wanted = { "gen-model": "generate", "edit-model": "edit", "ask-model": "analyze" };
    Object.keys(wanted).forEach(function (id) {
      var select = $(id);
      var previous = select.value;
      clear(select);
      if (id !== "ask-model") {
        var fallback = document.createElement("option");
        fallback.value = "";
        fallback.textContent = "(default)";
        select.appendChild(fallback);
      }
      models
        .filter(function (m) { return (m.capabilities || []).indexOf(wanted[id]) >= 0; })
        .forEach(function (m) {
          var option = document.createElement("option");
          option.value = String(m.id);
          option.textContent = String(m.id);
          select.appendChild(option);
        });
      var preferred = id === "ask-model" ? "local-vision" : previous;
      if (preferred && Array.prototype.some.call(select.options, function (o) { return o.value === preferred; })) {
        select.value = preferred;
      }
    });
  }

  function loadModels() {
    setStatus("key-status", "Checking the key...", "pending");
    return call("GET", "/models")
      .then(function (result) {
        var models = (result.data && result.data.data) || [];
        fillModels(models);
        setStatus("key-status", "Key accepted: " + models.length + " models available.", "ok");
      })
      .catch(function (failure) {
        setStatus("key-status", describe(failure), "error");
      });
  }

  // -- images ------------------------------------------------------------------------------------------

  function resultFigure(item, format, index) {
    var figure = document.createElement("figure");
    if (item.b64_json) {
      var img = document.createElement("img");
      img.src = "data:" + (MIME[format] || "image/png") + ";base64," + item.b64_json;
      img.alt = "Result " + (index + 1);
      img.className = "result";
      figure.appendChild(img);
    } else if (typeof item.url === "string" && /^https?:\/\//.test(item.url)) {
      var link = document.createElement("a");
      link.href = item.url;
      link.rel = "noopener noreferrer";
      link.target = "_blank";
      link.textContent = "Image " + (index + 1) + " (too large to show inline: open it)";
      figure.appendChild(link);
    }
    if (item.revised_prompt) {
      var caption = document.createElement("figcaption");
      caption.textContent = String(item.revised_prompt);
      figure.appendChild(caption);
    }
    return figure;
  }

  function showImages(containerId, body) {
    var container = $(containerId);
    clear(container);
    (body.data || []).forEach(function (item, index) {
      container.appendChild(resultFigure(item, body.output_format, index));
    });
    return (body.data || []).length;
  }

  function seconds(since) {
    return ((performance.now() - since) / 1000).toFixed(1) + " s";
  }

  function generate(event) {
    event.preventDefault();
    var request = {
      prompt: $("gen-prompt").value,
      size: $("gen-size").value,
      quality: $("gen-quality").value,
      n: parseInt($("gen-n").value, 10) || 1,
      response_format: "b64_json",
    };
    if ($("gen-model").value) {
      request.model = $("gen-model").value;
    }
    var started = performance.now();
    busy("gen-submit", true);
    setStatus("gen-status", "Generating " + request.n + " image(s)...", "pending");
    call("POST", "/images/generations", request)
      .then(function (result) {
        var count = showImages("gen-results", result.data || {});
        setStatus("gen-status", count + " image(s), " + (result.data.size || "") + ", in " + seconds(started) + ".", "ok");
      })
      .catch(function (failure) {
        setStatus("gen-status", describe(failure), "error");
      })
      .then(function () {
        busy("gen-submit", false);
      });
  }

  // -- edit: the picked image on a canvas, a painted mask ----------------------------------------------

  var editFile = null;
  var maskCanvas = document.createElement("canvas"); // opaque black; painted strokes become alpha 0
  var painted = false;
  var painting = null;

  function resetMask() {
    var overlay = $("edit-overlay");
    overlay.getContext("2d").clearRect(0, 0, overlay.width, overlay.height);
    var mask = maskCanvas.getContext("2d");
    mask.globalCompositeOperation = "source-over";
    mask.fillStyle = "#000";
    mask.fillRect(0, 0, maskCanvas.width, maskCanvas.height);
    painted = false;
  }

  function loadEditImage() {
    var file = $("edit-file").files[0];
    clear($("edit-results"));
    if (!file) {
      editFile = null;
      $("edit-stage").hidden = true;
      return;
    }
    var url = URL.createObjectURL(file);
    var img = new Image();
    img.onload = function () {
      var width = img.naturalWidth;
      var height = img.naturalHeight;
      [$("edit-canvas"), $("edit-overlay"), maskCanvas].forEach(function (canvas) {
        canvas.width = width;
        canvas.height = height;
      });
      $("edit-canvas").getContext("2d").drawImage(img, 0, 0);
      URL.revokeObjectURL(url);
      editFile = file;
      resetMask();
      $("edit-stage").hidden = false;
      setStatus("edit-status", width + "x" + height + " image loaded: paint the area to change.", "");
    };
    img.onerror = function () {
      URL.revokeObjectURL(url);
      editFile = null;
      $("edit-stage").hidden = true;
      setStatus("edit-status", "That file is not an image this browser can show.", "error");
    };
    img.src = url;
  }

  function canvasPoint(event) {
    var overlay = $("edit-overlay");
    var box = overlay.getBoundingClientRect();
    var scale = overlay.width / box.width;
    return { x: (event.clientX - box.left) * scale, y: (event.clientY - box.top) * scale, scale: scale };
  }

  function stroke(from, to) {
    var width = parseInt($("edit-brush").value, 10) * to.scale;
    [[$("edit-overlay").getContext("2d"), "source-over"], [maskCanvas.getContext("2d"), "destination-out"]]
      .forEach(function (pair) {
        var context = pair[0];
        context.globalCompositeOperation = pair[1];
        context.strokeStyle = "#ff2d55";
        context.lineWidth = width;
        context.lineCap = "round";
        context.lineJoin = "round";
        context.beginPath();
        context.moveTo(from.x, from.y);
        context.lineTo(to.x + 0.01, to.y);
        context.stroke();
      });
    painted = true;
  }

  function startPaint(event) {
    if (!editFile) {
      return;
    }
    event.preventDefault();
    $("edit-overlay").setPointerCapture(event.pointerId);
    painting = canvasPoint(event);
    stroke(painting, painting);
  }

  function movePaint(event) {
    if (!painting) {
      return;
    }
    var point = canvasPoint(event);
    stroke(painting, point);
    painting = point;
  }

  function endPaint() {
    painting = null;
  }

  function edit(event) {
    event.preventDefault();
    if (!editFile) {
      setStatus("edit-status", "Pick an image first.", "error");
      return;
    }
    var started = performance.now();
    busy("edit-submit", true);
    setStatus("edit-status", "Editing...", "pending");
    new Promise(function (resolve) {
      if (painted) {
        maskCanvas.toBlob(resolve, "image/png");
      } else {
        resolve(null); // nothing painted: no mask, the whole image may change
      }
    })
      .then(function (mask) {
        var form = new FormData();
        form.append("image", editFile, editFile.name || "image.png");
        if (mask) {
          form.append("mask", mask, "mask.png");
        }
        form.append("prompt", $("edit-prompt").value);
        form.append("response_format", "b64_json");
        if ($("edit-model").value) {
          form.append("model", $("edit-model").value);
        }
        return call("POST", "/images/edits", form);
      })
      .then(function (result) {
        var count = showImages("edit-results", result.data || {});
        setStatus("edit-status", count + " edited image(s) in " + seconds(started) +
          (painted ? " (masked)." : " (no mask: the whole image)."), "ok");
      })
      .catch(function (failure) {
        setStatus("edit-status", describe(failure), "error");
      })
      .then(function () {
        busy("edit-submit", false);
      });
  }

  // -- ask ---------------------------------------------------------------------------------------------

  var askDataUrl = null;

  function loadAskImage() {
    var file = $("ask-file").files[0];
    askDataUrl = null;
    $("ask-preview").hidden = true;
    $("ask-answer").textContent = "";
    if (!file) {
      return;
    }
    var reader = new FileReader();
    reader.onload = function () {
      askDataUrl = String(reader.result);
      $("ask-preview").src = askDataUrl;
      $("ask-preview").hidden = false;
    };
    reader.onerror = function () {
      setStatus("ask-status", "Could not read that file.", "error");
    };
    reader.readAsDataURL(file);
  }

  function outputText(body) {
    if (typeof body.output_text === "string") {
      return body.output_text;
    }
    var parts = [];
    (body.output || []).forEach(function (item) {
      (item.content || []).forEach(function (content) {
        if (content.type === "output_text" && typeof content.text === "string") {
          parts.push(content.text);
        }
      });
    });
    return parts.join("\n");
  }

  function ask(event) {
    event.preventDefault();
    if (!askDataUrl) {
      setStatus("ask-status", "Pick an image first.", "error");
      return;
    }
    var request = {
      model: $("ask-model").value || "local-vision",
      input: [{
        role: "user",
        content: [
          { type: "input_text", text: $("ask-question").value },
          { type: "input_image", image_url: askDataUrl },
        ],
      }],
    };
    var started = performance.now();
    busy("ask-submit", true);
    $("ask-answer").textContent = "";
    setStatus("ask-status", "Asking " + request.model + "...", "pending");
    call("POST", "/responses", request)
      .then(function (result) {
        $("ask-answer").textContent = outputText(result.data || {});
        setStatus("ask-status", "Answered in " + seconds(started) + ".", "ok");
      })
      .catch(function (failure) {
        setStatus("ask-status", describe(failure), "error");
      })
      .then(function () {
        busy("ask-submit", false);
      });
  }

  // -- usage -------------------------------------------------------------------------------------------

  var USAGE_COLUMNS = ["date", "model", "requests", "images", "input_tokens", "output_tokens", "cost_usd"];

  function usageRow(cells, header) {
    var row = document.createElement("tr");
    cells.forEach(function (value, index) {
      var cell = document.createElement(header && index === 0 ? "th" : "td");
      cell.textContent = value === undefined || value === null ? "" : String(value);
      row.appendChild(cell);
    });
    return row;
  }

  function loadUsage() {
    busy("usage-load", true);
    setStatus("usage-status", "Loading usage...", "pending");
    call("GET", "/usage")
      .then(function (result) {
        var body = result.data || {};
        var rows = Array.isArray(body.data) ? body.data : [];
        clear($("usage-rows"));
        clear($("usage-totals"));
        rows.forEach(function (entry) {
          $("usage-rows").appendChild(usageRow(USAGE_COLUMNS.map(function (c) { return entry[c]; })));
        });
        if (body.totals && typeof body.totals === "object") {
          var totals = body.totals;
          $("usage-totals").appendChild(usageRow(["total", ""].concat(USAGE_COLUMNS.slice(2).map(function (c) {
            return totals[c];
          })), true));
        }
        $("usage-table").hidden = false;
        setStatus("usage-status", rows.length ? rows.length + " row(s)." : "No usage recorded yet.", "ok");
      })
      .catch(function (failure) {
        $("usage-table").hidden = true;
        if (failure.status === 404) {
          setStatus("usage-status", "Usage is not available on this server (GET /v1/usage answered 404).", "error");
        } else {
          setStatus("usage-status", describe(failure), "error");
        }
      })
      .then(function () {
        busy("usage-load", false);
      });
  }

  // -- wiring ------------------------------------------------------------------------------------------

  $("api-base").textContent = API;
  try {
    var kept = window.sessionStorage.getItem(STORAGE_KEY);
    if (kept) {
      $("api-key").value = kept;
      $("remember-key").checked = true;
      loadModels();
    }
  } catch (ignored) {
    // storage disabled
  }
  $("key-form").addEventListener("submit", function (event) {
    event.preventDefault();
    rememberKey();
    loadModels();
  });
  $("remember-key").addEventListener("change", rememberKey);
  $("gen-form").addEventListener("submit", generate);
  $("edit-file").addEventListener("change", loadEditImage);
  $("edit-clear").addEventListener("click", resetMask);
  $("edit-overlay").addEventListener("pointerdown", startPaint);
  $("edit-overlay").addEventListener("pointermove", movePaint);
  $("edit-overlay").addEventListener("pointerup", endPaint);
  $("edit-overlay").addEventListener("pointercancel", endPaint);
  $("edit-form").addEventListener("submit", edit);
  $("ask-file").addEventListener("change", loadAskImage);
  $("ask-form").addEventListener("submit", ask);
  $("usage-load").addEventListener("click", loadUsage);
})();
