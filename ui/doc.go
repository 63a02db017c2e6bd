// Package ui is the built-in web dashboard every manager serves at "/" on
// its HTTPS API server (manager/httpapi's Config.UI hook).
//
// The assets are plain ES modules, one stylesheet and one HTML page,
// embedded in the binary with embed.FS: there is no build step (no npm,
// no bundler), so the bytes served are the bytes in the repository and a
// build is reproducible with the Go toolchain alone.
//
// The page talks only to the JSON API under /v1/ of the same origin,
// sending the token the user logged in with (kept in sessionStorage) as
// `Authorization: Bearer`. It never renders server data as HTML (only as
// text), and Handler sends a Content-Security-Policy that allows scripts,
// styles and connections to this origin alone, so a service name or a log
// line cannot run script in an operator's browser.
//
// Scale: every table is paged and filtered by the server
// (page.page_size, page.page_token, filters[...]); the live event stream
// (GET /v1/events, NDJSON read through fetch streaming) updates the rows
// on screen in place, batched once per animation frame, and re-lists only
// the visible page (debounced) when rows appear or counts change. The
// stream reconnects by itself with back-off, resuming from the index after
// the last event seen, or, when it saw none or the server no longer holds
// that index (OUT_OF_RANGE), watching from now and re-listing the visible
// page once the new stream is open, so no change falls between the list
// and the watch. The login, the role probe and the table lists are retried
// with the same back-off while the API cannot be reached (network errors,
// 502, 503, 504: a manager restarting, a browser whose network changed),
// so an open page comes back by itself.
//
// The browser tests are e2e/dashboard_test.go (headless Chromium through
// chromedriver, against a simulated 100,000-task API and a real cluster).
package ui
