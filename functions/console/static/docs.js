/* Swagger UI over the committed spec, served by darkroom itself (no CDN, no inline script: CSP script-src 'self'). */
(function () {
  "use strict";

  var path = window.location.pathname;
  // "" locally (http://127.0.0.1:3000/docs), "/prod" deployed (https://host/prod/docs).
  var base = path.slice(0, path.lastIndexOf("/docs"));
  var origin = window.location.origin;
  var loading = document.getElementById("docs-loading");

  if (typeof window.SwaggerUIBundle !== "function") {
    if (loading) {
      loading.textContent = "Swagger UI could not be loaded; the spec is at openapi.json.";
    }
    return;
  }

  window.ui = window.SwaggerUIBundle({
    url: base + "/openapi.json",
    dom_id: "#swagger-ui",
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    validatorUrl: null,
    persistAuthorization: false,
    // The spec has no servers (its paths start at /v1), so Swagger UI aims "Try it out" at the origin's
    // root; behind an API Gateway stage the API is at origin + "/prod": put the stage back.
    requestInterceptor: function (request) {
      if (base && request.url.indexOf(origin + "/v1/") === 0) {
        request.url = origin + base + request.url.slice(origin.length);
      }
      return request;
    },
  });
})();
