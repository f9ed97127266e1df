// Starts the vendored Swagger UI on the app's own OpenAPI document (no inline script: the CSP
// allows scripts from this server only).
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
