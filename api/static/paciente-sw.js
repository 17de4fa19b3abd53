// The patient app's service worker: the shell (page, manifest, icon) is kept so that the app opens
// offline; the API is never cached, so no patient data stays on the phone.
const SHELL = "medpay-paciente-v1";
const SHELL_FILES = ["/paciente", "/paciente/manifest.webmanifest", "/paciente/icon.svg"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(SHELL).then((cache) => cache.addAll(SHELL_FILES)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((names) => Promise.all(names.filter((name) => name !== SHELL).map((name) => caches.delete(name))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin || !SHELL_FILES.includes(url.pathname)) {
    return;
  }
  // The network first, so that a new version shows at once; the kept copy when offline.
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        const copy = response.clone();
        caches.open(SHELL).then((cache) => cache.put(url.pathname, copy));
        return response;
      })
      .catch(() => caches.match(url.pathname)),
  );
});
